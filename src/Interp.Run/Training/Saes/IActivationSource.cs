using static TorchSharp.torch;

namespace Interp.Training.Saes;

/// <summary>Where <see cref="SaeTrainer"/> gets its training batches: a model's activations (<see cref="ActivationBuffer"/>) or any other stream of vectors.</summary>
public interface IActivationSource
{
    /// <summary>Width of one activation.</summary>
    int DIn { get; }

    /// <summary>The next <paramref name="size"/> activations [size, d_in] float32 on the CPU (a new tensor the caller owns).</summary>
    Tensor NextBatch(int size);
}
