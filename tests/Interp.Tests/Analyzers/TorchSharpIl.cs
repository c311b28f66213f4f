using System.Collections.Immutable;
using System.Reflection.Emit;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Interp.Tests.Analyzers;

/// <summary>
/// Reads TorchSharp's IL to find the members that make a <c>Scalar</c> and leave it to the garbage collector: a call
/// of <c>Scalar.op_Implicit</c> or <c>ToScalar()</c> whose result is not stored in a local that the method disposes
/// (C#'s <c>using</c>), or a call of another such member (e.g. <c>Tensor.add(Tensor)</c> is <c>add(target, 1)</c>, so
/// <c>operator +(Tensor, Tensor)</c>, which calls it, is one too). The result, as documentation IDs of the members
/// callable from outside TorchSharp, is what <c>src/Interp.Analyzers/UnownedScalarMembers.txt</c> must hold.
/// </summary>
internal static class TorchSharpIl
{
    private static readonly Dictionary<ushort, OpCode> OpCodesByValue =
        typeof(OpCodes).GetFields().Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => (ushort)o.Value);

    /// <summary>Documentation IDs of the externally visible members of the assembly at <paramref name="path"/> that make unowned scalars, sorted.</summary>
    public static IReadOnlyList<string> UnownedScalarMembers(string path)
    {
        var tokens = UnownedScalarMethodTokens(path);
        var reference = MetadataReference.CreateFromFile(path);
        var platform = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => p.EndsWith(".dll", StringComparison.Ordinal) && !Path.GetFileName(p).StartsWith("TorchSharp", StringComparison.Ordinal))
            .Select(p => MetadataReference.CreateFromFile(p));
        var compilation = CSharpCompilation.Create("scan", references: [reference, .. platform]);
        var assembly = (IAssemblySymbol)compilation.GetAssemblyOrModuleSymbol(reference)!;
        var ids = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var type in Types(assembly.GlobalNamespace))
        {
            if (!Visible(type)) continue;
            foreach (var method in type.GetMembers().OfType<IMethodSymbol>())
                if (tokens.Contains(method.MetadataToken) && method.DeclaredAccessibility is Accessibility.Public or Accessibility.Protected or Accessibility.ProtectedOrInternal
                    && method.GetDocumentationCommentId() is { } id)
                    ids.Add(id);
        }
        return [.. ids];
    }

    private static bool Visible(INamedTypeSymbol type)
    {
        for (var t = type; t is not null; t = t.ContainingType)
            if (t.DeclaredAccessibility is not (Accessibility.Public or Accessibility.Protected or Accessibility.ProtectedOrInternal)) return false;
        return true;
    }

    private static IEnumerable<INamedTypeSymbol> Types(INamespaceSymbol ns)
    {
        foreach (var t in ns.GetTypeMembers())
            foreach (var nested in WithNested(t)) yield return nested;
        foreach (var child in ns.GetNamespaceMembers())
            foreach (var t in Types(child)) yield return t;
    }

    private static IEnumerable<INamedTypeSymbol> WithNested(INamedTypeSymbol type) =>
        type.GetTypeMembers().SelectMany(WithNested).Prepend(type);

    /// <summary>Metadata tokens of every method (any visibility) that makes an unowned scalar, itself or through a callee.</summary>
    public static HashSet<int> UnownedScalarMethodTokens(string path)
    {
        using var stream = File.OpenRead(path);
        using var pe = new PEReader(stream);
        var md = pe.GetMetadataReader();
        var callees = new Dictionary<MethodDefinitionHandle, List<MethodDefinitionHandle>>();
        var leaking = new HashSet<MethodDefinitionHandle>();
        foreach (var handle in md.MethodDefinitions)
        {
            var method = md.GetMethodDefinition(handle);
            if (method.RelativeVirtualAddress == 0) continue;
            if (IsScalarFactory(md, handle)) continue;   // op_Implicit and ToScalar hand their scalar to the caller
            var (calls, leaks) = Scan(md, pe.GetMethodBody(method.RelativeVirtualAddress));
            callees[handle] = calls;
            if (leaks) leaking.Add(handle);
        }
        for (bool changed = true; changed;)
        {
            changed = false;
            foreach (var (method, calls) in callees)
                if (!leaking.Contains(method) && calls.Any(leaking.Contains))
                    changed = leaking.Add(method);
        }
        return leaking.Select(h => MetadataTokens.GetToken(h)).ToHashSet();
    }

    private static bool IsScalarFactory(MetadataReader md, MethodDefinitionHandle handle)
    {
        var method = md.GetMethodDefinition(handle);
        string type = md.GetString(md.GetTypeDefinition(method.GetDeclaringType()).Name);
        string name = md.GetString(method.Name);
        return (type == "Scalar" && name is "op_Implicit" or "op_Explicit") || (type == "ScalarExtensionMethods" && name.StartsWith("To", StringComparison.Ordinal));
    }

    private static bool IsScalarCreation(string callee) =>
        callee is "Scalar::op_Implicit" or "Scalar::op_Explicit" || (callee.StartsWith("ScalarExtensionMethods::To", StringComparison.Ordinal) && callee.EndsWith("Scalar", StringComparison.Ordinal));

    /// <summary>The method's callees inside this assembly, and whether it makes a scalar it does not dispose.</summary>
    private static (List<MethodDefinitionHandle> Calls, bool Leaks) Scan(MetadataReader md, MethodBodyBlock body)
    {
        var calls = new List<MethodDefinitionHandle>();
        var il = body.GetILReader();
        var created = new List<int?>();        // per creation: the local it is stored into, or null
        var disposed = new HashSet<int>();     // locals loaded right before a Dispose call
        int? lastLoadedLocal = null;
        bool pendingCreation = false;
        while (il.RemainingBytes > 0)
        {
            int value = il.ReadByte();
            if (value == 0xFE) value = 0xFE00 | il.ReadByte();
            var op = OpCodesByValue[(ushort)value];
            int? loaded = null, stored = null;
            switch (op.OperandType)
            {
                case OperandType.InlineMethod:
                {
                    var target = MetadataTokens.EntityHandle(il.ReadInt32());
                    if (target.Kind == HandleKind.MethodSpecification) target = md.GetMethodSpecification((MethodSpecificationHandle)target).Method;
                    if (target.Kind == HandleKind.MethodDefinition) calls.Add((MethodDefinitionHandle)target);
                    string name = Name(md, target);
                    if (pendingCreation) created.Add(null);
                    pendingCreation = IsScalarCreation(name);
                    if (name is "Scalar::Dispose" or "IDisposable::Dispose" && lastLoadedLocal is { } local) disposed.Add(local);
                    lastLoadedLocal = null;
                    continue;
                }
                case OperandType.InlineNone:
                    loaded = LocalIndex(value, 0x06, 0x09);     // ldloc.0 … ldloc.3
                    stored = LocalIndex(value, 0x0A, 0x0D);     // stloc.0 … stloc.3
                    break;
                case OperandType.ShortInlineVar:
                {
                    int index = il.ReadByte();
                    if (value == 0x11) loaded = index;          // ldloc.s
                    if (value == 0x13) stored = index;          // stloc.s
                    break;
                }
                case OperandType.InlineVar:
                {
                    int index = il.ReadUInt16();
                    if (value == 0xFE0C) loaded = index;        // ldloc
                    if (value == 0xFE0E) stored = index;        // stloc
                    break;
                }
                case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI: il.ReadByte(); break;
                case OperandType.InlineI8 or OperandType.InlineR: il.ReadInt64(); break;
                case OperandType.InlineSwitch:
                {
                    int targets = il.ReadInt32();
                    il.Offset += 4 * targets;
                    break;
                }
                default: il.ReadInt32(); break;
            }
            if (pendingCreation)
            {
                created.Add(stored);
                pendingCreation = false;
            }
            // "ldloc x; brfalse; ldloc x; callvirt Dispose" (using's null check) keeps the local across the branch.
            if (loaded is not null) lastLoadedLocal = loaded;
            else if (op.FlowControl != FlowControl.Cond_Branch) lastLoadedLocal = null;
        }
        if (pendingCreation) created.Add(null);
        return (calls, created.Any(local => local is not { } l || !disposed.Contains(l)));
    }

    private static int? LocalIndex(int value, int first, int last) => value >= first && value <= last ? value - first : null;

    private static string Name(MetadataReader md, EntityHandle handle)
    {
        switch (handle.Kind)
        {
            case HandleKind.MethodDefinition:
            {
                var m = md.GetMethodDefinition((MethodDefinitionHandle)handle);
                return md.GetString(md.GetTypeDefinition(m.GetDeclaringType()).Name) + "::" + md.GetString(m.Name);
            }
            case HandleKind.MemberReference:
            {
                var r = md.GetMemberReference((MemberReferenceHandle)handle);
                string parent = r.Parent.Kind switch
                {
                    HandleKind.TypeReference => md.GetString(md.GetTypeReference((TypeReferenceHandle)r.Parent).Name),
                    HandleKind.TypeDefinition => md.GetString(md.GetTypeDefinition((TypeDefinitionHandle)r.Parent).Name),
                    _ => "?",
                };
                return parent + "::" + md.GetString(r.Name);
            }
            default:
                return "?";
        }
    }
}
