"""Small utilities (FLOP counting: :mod:`.flops`). Weight files live in
:mod:`davpt_seg.weights`."""
