"""The benchmark suite: this project against pytorch-fcn and against the machine's limit.

    python -m fcn_lightning.bench [--quick] [--out results/bench/results.md]
                                  [--repeats N] [--variants fcn32s fcn8s] [--device cuda]

Prints and saves one Markdown table; each row is a ratio A / B of two sides measured in the
same run, their calls interleaved (A B A B ...) after a warm-up round, each side's median:

1. ours (caffe geometry) vs pytorch-fcn with identical weights, inference and training step
   (outputs checked equal first);
2. aligned vs caffe geometry (time and FLOPs) and aligned vs pytorch-fcn;
3. training-step FLOP/s as a fraction of a large matmul's FLOP/s (and, on GPU, of the bf16
   peak);
4. data pipeline images/s per worker, vs plain PIL and vs the training step it feeds;
5. metric update cost as a share of the evaluation step;
6. peak memory of a training step (fresh process per net);
7. channels_last, bf16 autocast, torch.compile on vs off.

Speed is measured here, never asserted in tests.
"""
