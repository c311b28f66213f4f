using System.Collections.Concurrent;

namespace Interp.Experiments;

/// <summary>
/// Runs async work on one dedicated thread, continuations included. TorchSharp keeps grad mode (<c>no_grad()</c>) and
/// dispose scopes per thread; an <c>await</c> that resumed on another thread would leave them set on the first
/// one (a later training step on that thread would find gradients off) and put new tensors outside their scope.
/// </summary>
internal static class TorchThread
{
    /// <summary>Runs <paramref name="body"/> to completion on a fresh thread with a single-threaded synchronization context.</summary>
    public static Task RunAsync(Func<Task> body)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            var context = new SingleThreadContext();
            SynchronizationContext.SetSynchronizationContext(context);
            Task task;
            try { task = body(); }
            catch (Exception ex) { task = Task.FromException(ex); }
            task.ContinueWith(_ => context.Complete(), TaskScheduler.Default);
            context.RunUntilComplete();
            if (task.IsCanceled) done.SetCanceled();
            else if (task.Exception is { } error) done.SetException(error.InnerExceptions);
            else done.SetResult();
        })
        { IsBackground = true, Name = "interp-torch" };
        thread.Start();
        return done.Task;
    }

    private sealed class SingleThreadContext : SynchronizationContext
    {
        private readonly BlockingCollection<(SendOrPostCallback Callback, object? State)> _queue = new();

        public override void Post(SendOrPostCallback d, object? state) => _queue.Add((d, state));

        public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("synchronous Send onto the torch thread");

        public void RunUntilComplete()
        {
            foreach (var (callback, state) in _queue.GetConsumingEnumerable()) callback(state);
        }

        public void Complete() => _queue.CompleteAdding();
    }
}
