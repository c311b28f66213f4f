using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.IO;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Operations;

namespace Interp.Analyzers;

/// <summary>
/// Reports every TorchSharp <c>Scalar</c> that nothing owns. A <c>TorchSharp.Scalar</c> wraps a native object and frees
/// it in its finalizer; one made by an implicit conversion (<c>t.mul(0.5)</c>, <c>t.fill_(1)</c>) is referenced by
/// nobody once its handle has been passed to libtorch, so the garbage collector may finalise it while the native call
/// still reads it — a use-after-free that fails a few forward passes in a thousand under allocation pressure.
/// <list type="bullet">
/// <item><b>INTERP0001</b>: an implicit (or cast) conversion to <c>Scalar</c> in this code.</item>
/// <item><b>INTERP0002</b>: a call of a TorchSharp member that makes such a scalar itself (<c>t + 1.0</c>, <c>a + b</c> on
/// tensors — <c>add(Tensor)</c> passes an implicit alpha of 1 —, <c>arange(n)</c>, <c>square()</c>, …), listed in
/// <c>UnownedScalarMembers.txt</c>, which a test regenerates from TorchSharp's IL.</item>
/// </list>
/// The fix is an owned scalar: a field created once and disposed with its owner, <c>using var s = x.ToScalar();</c>
/// around the call, or the overload that takes the scalar (<c>a.add(b, one)</c>, <c>arange(start, stop, step)</c>).
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class ScalarLifetimeAnalyzer : DiagnosticAnalyzer
{
    /// <summary>INTERP0001: implicit conversion to an unowned scalar.</summary>
    public static readonly DiagnosticDescriptor ImplicitScalar = new(
        "INTERP0001",
        "Unowned TorchSharp Scalar",
        "'{0}' becomes a TorchSharp.Scalar that nothing owns; the garbage collector can free it while libtorch reads it. " +
        "Use an owned scalar: a field disposed with its owner, or 'using var s = value.ToScalar();' around the call.",
        "Reliability", DiagnosticSeverity.Error, isEnabledByDefault: true,
        description: "Implicit conversions to TorchSharp.Scalar create a finalizable native object that can be collected during the native call that uses it.");

    /// <summary>INTERP0002: a TorchSharp member that makes an unowned scalar internally.</summary>
    public static readonly DiagnosticDescriptor UnownedInside = new(
        "INTERP0002",
        "TorchSharp member makes an unowned Scalar",
        "{0} makes a TorchSharp.Scalar internally and leaves it to the garbage collector, which can free it while libtorch reads it. " +
        "Call an overload that takes an owned scalar instead (e.g. a.add(b, one), t.mul(owned), arange(start, stop, step)).",
        "Reliability", DiagnosticSeverity.Error, isEnabledByDefault: true,
        description: "These TorchSharp members convert a number to Scalar inside themselves without disposing it; see UnownedScalarMembers.txt.");

    /// <summary>Documentation IDs of the TorchSharp members that make unowned scalars (resource <c>UnownedScalarMembers.txt</c>).</summary>
    public static ImmutableHashSet<string> UnownedMembers { get; } = LoadMembers();

    /// <inheritdoc />
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } = ImmutableArray.Create(ImplicitScalar, UnownedInside);

    /// <inheritdoc />
    public override void Initialize(AnalysisContext context)
    {
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.EnableConcurrentExecution();
        context.RegisterCompilationStartAction(start =>
        {
            var scalar = start.Compilation.GetTypeByMetadataName("TorchSharp.Scalar");
            if (scalar is null) return; // no TorchSharp here
            start.RegisterOperationAction(c => AnalyzeConversion(c, scalar), OperationKind.Conversion);
            start.RegisterOperationAction(c => AnalyzeMember(c, ((IInvocationOperation)c.Operation).TargetMethod), OperationKind.Invocation);
            start.RegisterOperationAction(c => AnalyzeMember(c, ((IBinaryOperation)c.Operation).OperatorMethod), OperationKind.Binary);
            start.RegisterOperationAction(c => AnalyzeMember(c, ((IUnaryOperation)c.Operation).OperatorMethod), OperationKind.Unary);
            start.RegisterOperationAction(c => AnalyzeMember(c, ((ICompoundAssignmentOperation)c.Operation).OperatorMethod), OperationKind.CompoundAssignment);
            start.RegisterOperationAction(c => AnalyzeMember(c, ((IObjectCreationOperation)c.Operation).Constructor), OperationKind.ObjectCreation);
            start.RegisterOperationAction(c => AnalyzeMember(c, ((IMethodReferenceOperation)c.Operation).Method), OperationKind.MethodReference);
            start.RegisterOperationAction(c =>
            {
                var property = ((IPropertyReferenceOperation)c.Operation).Property;
                AnalyzeMember(c, property.GetMethod);
                AnalyzeMember(c, property.SetMethod);
            }, OperationKind.PropertyReference);
        });
    }

    private static void AnalyzeConversion(OperationAnalysisContext context, INamedTypeSymbol scalar)
    {
        var conversion = (IConversionOperation)context.Operation;
        var method = conversion.OperatorMethod;
        if (method is null || !conversion.Conversion.IsUserDefined) return;
        if (!SymbolEqualityComparer.Default.Equals(method.ContainingType, scalar)) return;
        if (method.Name != "op_Implicit" && method.Name != "op_Explicit") return;
        context.ReportDiagnostic(Diagnostic.Create(ImplicitScalar, conversion.Operand.Syntax.GetLocation(), conversion.Operand.Syntax.ToString()));
    }

    private static void AnalyzeMember(OperationAnalysisContext context, IMethodSymbol? method)
    {
        if (method is null) return;
        var definition = method.ReducedFrom ?? method;
        definition = definition.OriginalDefinition;
        if (definition.ContainingAssembly?.Name != "TorchSharp") return;
        string? id = definition.GetDocumentationCommentId();
        if (id is null || !UnownedMembers.Contains(id)) return;
        context.ReportDiagnostic(Diagnostic.Create(UnownedInside, context.Operation.Syntax.GetLocation(),
            definition.ToDisplayString(SymbolDisplayFormat.CSharpShortErrorMessageFormat)));
    }

    private static ImmutableHashSet<string> LoadMembers()
    {
        using var stream = typeof(ScalarLifetimeAnalyzer).Assembly.GetManifestResourceStream("Interp.Analyzers.UnownedScalarMembers.txt")
            ?? throw new InvalidOperationException("Interp.Analyzers: resource UnownedScalarMembers.txt is missing");
        using var reader = new StreamReader(stream);
        var members = new List<string>();
        string? line;
        while ((line = reader.ReadLine()) != null)
        {
            line = line.Trim();
            if (line.Length > 0 && !line.StartsWith("#", StringComparison.Ordinal)) members.Add(line);
        }
        return members.ToImmutableHashSet(StringComparer.Ordinal);
    }
}
