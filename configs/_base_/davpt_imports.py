# Imported by every davpt_seg config: `davpt_seg` registers the components
# (backbone, hooks, losses, datasets); `davpt_seg.compat.enable` runs
# davpt_seg.compat.install(), which stock launchers (mmseg's tools/train.py)
# do not call: a weights_only local checkpoint loader (resume / load_from
# under torch >= 2.6), a filter for mmengine's one warning per frozen
# parameter, and an SDPA FLOP handle. See davpt_seg/compat/__init__.py.
custom_imports = dict(
    imports=['davpt_seg', 'davpt_seg.compat.enable'],
    allow_failed_imports=False)
