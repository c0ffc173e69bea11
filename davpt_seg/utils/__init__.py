"""Small utilities (FLOP counting: :mod:`.flops`; host-to-device copies:
:mod:`.device`). Weight files live in
:mod:`davpt_seg.weights`."""
