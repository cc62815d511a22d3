"""Speech separation: split a two-person mixture into one channel per participant.

One module per backend (``mossformer``: the MossFormer2 network through modelscope; ``avgate``:
gating the mixture by audio-visual activity) and ``assign`` (which source belongs to which
track). Backends share one contract: mono ``float32 [n_samples]`` in, ``float32 [n_sources,
n_samples]`` out at the same rate, sources in arbitrary order.
"""
