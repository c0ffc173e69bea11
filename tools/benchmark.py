# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Cost of DA-VPT against VPT-Deep, full fine-tuning and mmseg's stock ViT.

One command, one process, one input batch: every variant is built through
mmseg's registry from the stock SETR-PUP ADE20K config
(``setr_vit-l_pup_8xb2-160k_ade20k-512x512.py``, resized by ``--preset``),
and timed round-robin (the order rotates every repetition) after warm-up::

    OMP_NUM_THREADS=2 python tools/benchmark.py --preset cpu-small --amp
    python tools/benchmark.py --preset vitl-512 --amp            # on a GPU

Rows (training rows time ``EncoderDecoder.train_step`` = data preprocessor +
forward + losses + backward + SGD step through mmengine's ``OptimWrapper``):

1. ``full_ft``      stock ``VisionTransformer`` + SETR-PUP heads, all trainable
2. ``frozen_ft``    the same with the backbone frozen (heads only)
3. ``vpt``          ``PromptedVisionTransformer``, VPT-Deep prompts, no losses
4. ``davpt``        + metric losses through a real ``DAVPTHook`` (forward hook,
                    class draw, class statistics, per-iteration hook calls)
5. ``davpt_plus``   + trainable K/V biases (DA-VPT+)
6. inference (eval, no grad): ``infer_stock`` / ``infer_prompted``
   (``encode_decode``: backbone + decode head) and the backbones alone.

plus ``davpt_cp`` (backbone ``with_cp``) and ``davpt_cp_heads``
(``tools/train.py --with-cp``: backbone ``with_cp`` and the heads' losses
recomputed by ``CheckpointEncoderDecoder``), with ``--amp`` the ``*_amp``
rows, and
``bb_full_ft`` / ``bb_vpt`` / ``bb_vpt_cp``: a backbone-only training step
(forward, backward of the mean of the outputs, SGD step) that isolates the
backbone's cost from the SETR-PUP heads, which all rows share.

Also timed: one class->prompt mapping update (k-means, 150 classes x 1024
dims), the initial mapping pass per batch, and the host time of DAVPTHook's
forward hook. Each row records the wall time and this process's CPU time per
step (the latter is robust to other processes on a shared CPU), and the
targets of the benchmark issue are evaluated into the report.

Memory: each row is re-run in a fresh subprocess that holds only that model.
On CUDA the figure is ``torch.cuda.max_memory_allocated`` over a step; on CPU
it is the peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) above
the RSS before the model was built, with glibc told to serve blocks >= 64 KiB
by ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the RSS.

Writes ``benchmark.json`` and ``benchmark.md`` to ``--out-dir``.
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

# --------------------------------------------------------------------------
# Presets. Every preset starts from mmseg's SETR-PUP ADE20K config;
# ``vitl-512`` is that config unchanged (ViT-L/16, 512x512, batch 2, 150
# classes, heads of 256 channels). The smaller ones shrink the backbone, the
# crop and the heads' channels: SETR-PUP's heads run at up to full
# resolution, so at a small backbone they would dominate the step far more
# than at ViT-L. ``cpu-small`` (ViT-S/16: 12 x 384, 6 heads, 256 px, heads of
# 48 channels) keeps ViT-L@512's split of forward FLOPs: heads ~31% (ViT-L@512:
# 26%); 36 GFLOP per forward. (On a CPU the heads' memory-bound work -
# upsampling, 150-class softmax and top-k at full resolution - still takes
# most of a training step.) ``tiny`` is for the tests: its model is so small
# that fixed per-call overheads decide every ratio, so its targets get no
# verdict (``SCHEMA_ONLY_PRESETS``).
# --------------------------------------------------------------------------
PRESETS = {
    'tiny': dict(
        embed_dims=64, num_layers=2, num_heads=2, mlp_ratio=4,
        out_indices=(0, 1), main_in_index=1, aux_in_index=(0, 1),
        crop=64, batch=2, head_channels=16, num_classes=8,
        num_prompts=4, num_proxy_prompts=4, guided_layers=(1, ),
        warmup=1, reps=2, mem_warmup=1, mem_steps=1, mapping_reps=3),
    'cpu-small': dict(
        embed_dims=384, num_layers=12, num_heads=6, mlp_ratio=4,
        out_indices=(2, 5, 8, 11), main_in_index=3, aux_in_index=(0, 1, 2),
        crop=256, batch=2, head_channels=48, num_classes=150,
        num_prompts=20, num_proxy_prompts=10, guided_layers=(5, ),
        warmup=1, reps=7, mem_warmup=1, mem_steps=1, mapping_reps=20),
    'vitl-512': dict(
        embed_dims=1024, num_layers=24, num_heads=16, mlp_ratio=4,
        out_indices=(9, 14, 19, 23), main_in_index=3, aux_in_index=(0, 1, 2),
        crop=512, batch=2, head_channels=256, num_classes=150,
        num_prompts=20, num_proxy_prompts=10, guided_layers=(11, ),
        warmup=3, reps=10, mem_warmup=2, mem_steps=2, mapping_reps=20),
}

# Presets whose ratios mean nothing (they only check that every row runs and
# the report's schema): their targets are reported with this verdict instead
# of met / MISSED, and ``met`` is None in the JSON.
SCHEMA_ONLY_PRESETS = {'tiny': 'n/a (tiny preset: schema check only)'}

# id -> (issue row, kind, backbone, description, build options)
VARIANTS = {
    'full_ft': ('1', 'train', 'stock',
                'stock ViT + SETR-PUP, full fine-tuning', {}),
    'frozen_ft': ('2', 'train', 'stock',
                  'stock ViT frozen, heads only', dict(freeze=True)),
    'vpt': ('3', 'train', 'prompted', 'VPT-Deep (prompts, no metric losses)',
            {}),
    'davpt': ('4', 'train', 'prompted',
              'DA-VPT (prompts + metric losses + DAVPTHook)',
              dict(davpt=True)),
    'davpt_plus': ('5', 'train', 'prompted', 'DA-VPT+ (+ K/V biases)',
                   dict(davpt=True, kv=True)),
    'davpt_cp': ('4cp', 'train', 'prompted',
                 'DA-VPT, backbone with_cp=True',
                 dict(davpt=True, cp=True)),
    'davpt_cp_heads': ('4cph', 'train', 'prompted',
                       'DA-VPT, --with-cp: backbone with_cp + '
                       'CheckpointEncoderDecoder heads',
                       dict(davpt=True, cp=True, cp_heads=True)),
    'full_ft_amp': ('1a', 'train', 'stock', 'full fine-tuning, AMP',
                    dict(amp=True)),
    'vpt_amp': ('3a', 'train', 'prompted', 'VPT-Deep, AMP', dict(amp=True)),
    'davpt_amp': ('4a', 'train', 'prompted', 'DA-VPT, AMP',
                  dict(davpt=True, amp=True)),
    'davpt_cp_amp': ('4cpa', 'train', 'prompted',
                     'DA-VPT, --with-cp (backbone + heads) + AMP',
                     dict(davpt=True, cp=True, cp_heads=True, amp=True)),
    'bb_full_ft': ('1b', 'train', 'stock',
                   'backbone only: stock ViT, all weights train',
                   dict(backbone_only=True)),
    'bb_vpt': ('3b', 'train', 'prompted',
               'backbone only: prompted ViT (VPT-Deep prompts)',
               dict(backbone_only=True)),
    'bb_vpt_cp': ('3bcp', 'train', 'prompted',
                  'backbone only: prompted ViT, with_cp=True',
                  dict(backbone_only=True, cp=True)),
    'infer_stock': ('6', 'infer', 'stock',
                    'inference: stock ViT + decode head', {}),
    'infer_prompted': ('6', 'infer', 'prompted',
                       'inference: prompted ViT (DA-VPT) + decode head',
                       dict(davpt=True)),
    'infer_bb_stock': ('6b', 'infer', 'stock', 'inference: stock ViT alone',
                       dict(backbone_only=True)),
    'infer_bb_prompted': ('6b', 'infer', 'prompted',
                          'inference: prompted ViT (DA-VPT) alone',
                          dict(backbone_only=True, davpt=True)),
}
AMP_ROWS = ('full_ft_amp', 'vpt_amp', 'davpt_amp', 'davpt_cp_amp')
# Inference rows reuse the weights of these training rows' models.
INFER_SOURCE = {'infer_stock': 'full_ft', 'infer_prompted': 'davpt',
                'infer_bb_stock': 'full_ft', 'infer_bb_prompted': 'davpt'}
INFER_REF = {'infer_stock': 'infer_stock', 'infer_prompted': 'infer_stock',
             'infer_bb_stock': 'infer_bb_stock',
             'infer_bb_prompted': 'infer_bb_stock'}
MAPPING_INTERVAL = 1264  # ADE20K: one epoch of 20210 images at 8 x 2

ROW_KEYS = ('id', 'row', 'kind', 'description', 'trainable_params',
            'total_params', 'time_ms', 'cpu_time_ms', 'memory_mb', 'ratios')
TIME_KEYS = ('median', 'q1', 'q3', 'iqr', 'min', 'max', 'samples')
MEMORY_KEYS = ('peak', 'resident', 'step_peak')


def variant_ids(amp: bool):
    return [v for v in VARIANTS if amp or v not in AMP_ROWS]


# --------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------
def setr_model_cfg(preset: dict) -> dict:
    """The stock SETR-PUP ADE20K model config, resized to ``preset``."""
    import mmseg
    from mmengine.config import Config
    path = os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'configs',
                        'setr', 'setr_vit-l_pup_8xb2-160k_ade20k-512x512.py')
    model = Config.fromfile(path).model.to_dict()
    model['pretrained'] = None
    crop = (preset['crop'], preset['crop'])
    model['data_preprocessor']['size'] = crop
    bb = model['backbone']
    bb.update(img_size=crop, embed_dims=preset['embed_dims'],
              num_layers=preset['num_layers'],
              num_heads=preset['num_heads'], mlp_ratio=preset['mlp_ratio'],
              out_indices=tuple(preset['out_indices']), init_cfg=None)
    heads = [model['decode_head']] + list(model['auxiliary_head'])
    in_index = [preset['main_in_index']] + list(preset['aux_in_index'])
    model['auxiliary_head'] = heads[1:len(in_index)]
    for head, idx in zip(heads, in_index):
        head.update(in_channels=preset['embed_dims'],
                    channels=preset['head_channels'], in_index=idx,
                    num_classes=preset['num_classes'])
    return model


def prompted_backbone_cfg(preset: dict, davpt=False, kv=False, cp=False):
    return dict(type='PromptedVisionTransformer',
                num_prompts=preset['num_prompts'],
                num_proxy_prompts=preset['num_proxy_prompts'],
                guided_layers=list(preset['guided_layers']),
                num_classes=preset['num_classes'] if davpt else None,
                tune_kv_bias=kv, with_cp=cp)


def build_variant(vid: str, preset: dict, device, args):
    """Build one row's model, optimiser wrapper and (DA-VPT) hook."""
    import torch
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    _, kind, backbone, _, opt = VARIANTS[vid]
    cfg = setr_model_cfg(preset)
    if backbone == 'prompted':
        cfg['backbone'].update(prompted_backbone_cfg(
            preset, davpt=opt.get('davpt', False), kv=opt.get('kv', False),
            cp=opt.get('cp', False)))
    torch.manual_seed(0)
    if opt.get('cp_heads'):
        cfg.update(type='CheckpointEncoderDecoder', checkpoint_heads=True)
    if opt.get('backbone_only'):
        model = MODELS.build(cfg['backbone'])
    else:
        model = revert_sync_batchnorm(MODELS.build(cfg))
    model.init_weights()
    if opt.get('freeze'):
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    model.to(device)
    model.train()
    hook = None
    if opt.get('davpt') and not opt.get('backbone_only'):
        hook = make_hook(model, preset, device)
    ow = None
    if kind == 'train':
        ow_cfg = dict(type='OptimWrapper',
                      optimizer=dict(type='SGD', lr=1e-3, momentum=0.9,
                                     weight_decay=0.),
                      paramwise_cfg=dict(
                          custom_keys={'head': dict(lr_mult=10.)}))
        if opt.get('amp'):
            if device.type == 'cuda':
                ow_cfg.update(type='AmpOptimWrapper', dtype=args.amp_dtype)
            else:
                ow_cfg.update(type='BenchCPUAmpOptimWrapper')
        ow = build_optim_wrapper(model, ow_cfg)
    return SimpleNamespace(id=vid, model=model, hook=hook, ow=ow, opt=opt,
                           kind=kind)


def register_cpu_amp():
    """OptimWrapper whose ``optim_context`` is CPU bf16 autocast (mmengine's
    ``AmpOptimWrapper`` is CUDA/NPU/MLU only)."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS
    from mmengine.runner.amp import autocast
    import torch

    class BenchCPUAmpOptimWrapper(OptimWrapper):

        @contextlib.contextmanager
        def optim_context(self, model):
            with super().optim_context(model), autocast(
                    device_type='cpu', dtype=torch.bfloat16):
                yield

    OPTIM_WRAPPERS.register_module(module=BenchCPUAmpOptimWrapper,
                                   force=True)


class _TimedHookCall:
    """Wraps ``DAVPTHook._add_metric_losses`` to record its host wall time
    (no device synchronisation is added)."""

    def __init__(self, fn):
        self.fn = fn
        self.samples = []
        self.record = False

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.fn(*args, **kwargs)
        if self.record and out is not None:
            self.samples.append((time.perf_counter() - t0) * 1e3)
        return out


def make_hook(segmentor, preset, device):
    """A real DAVPTHook on ``segmentor`` with an initialised mapping."""
    import torch
    from davpt_seg.engine.hooks.davpt_hook import DAVPTHook
    hook = DAVPTHook(mapping_interval=MAPPING_INTERVAL, seed=0)
    hook._add_metric_losses = _TimedHookCall(hook._add_metric_losses)
    hook._setup(segmentor)
    hook._seed = 0
    mapping = hook.mapping
    n, c = mapping.num_classes, mapping.embed_dims
    g = torch.Generator().manual_seed(0)
    mapping.accumulate(torch.randn(n, c, generator=g).to(device),
                       torch.eye(n, dtype=torch.bool, device=device))
    if not mapping.update():
        raise RuntimeError('could not initialise the class->prompt mapping')
    return hook


def make_batch(preset, device):
    """``train_step`` data: uint8 images and labels with several classes
    (random 4x4 class blocks + an ignored stripe)."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    s, n = preset['crop'], preset['num_classes']
    inputs, samples = [], []
    for _ in range(preset['batch']):
        inputs.append(torch.randint(0, 256, (3, s, s), generator=g,
                                    dtype=torch.uint8))
        blocks = torch.randint(0, n, (1, 1, 4, 4), generator=g)
        label = torch.nn.functional.interpolate(
            blocks.float(), size=(s, s), mode='nearest').long()[0]
        label[:, :, :max(1, s // 16)] = 255
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=label)
        ds.set_metainfo(dict(img_shape=(s, s), ori_shape=(s, s),
                             pad_shape=(s, s)))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


# --------------------------------------------------------------------------
# one step per row
# --------------------------------------------------------------------------
class Runner:
    """Stub of the runner attributes DAVPTHook's iteration hooks read."""

    def __init__(self):
        from mmengine.logging import MMLogger
        self.iter = 0
        self.logger = MMLogger.get_current_instance()


def make_step(v, models, data, preset, device, args):
    """Return a zero-argument callable running one step of row ``v``."""
    import torch
    if v.kind == 'infer':
        seg = models.get(INFER_SOURCE[v.id], v).model
        if v.opt.get('backbone_only'):
            net = getattr(seg, 'backbone', seg)
            x = normalized_inputs(data, device)

            def fn():
                net.eval()
                with torch.no_grad():
                    net(x)
                net.train()
        else:
            proc = seg.data_preprocessor(data, False)
            metas = [s.metainfo for s in proc['data_samples']]

            def fn():
                seg.eval()
                with torch.no_grad():
                    seg.encode_decode(proc['inputs'], metas)
                seg.train()
        return fn
    if v.opt.get('backbone_only'):
        x = normalized_inputs(data, device)
        net, ow = v.model, v.ow

        def fn():
            with ow.optim_context(net):
                outs = net(x)
                loss = sum(o.float().mean() for o in outs)
            ow.update_params(loss)
        return fn
    runner = Runner()
    seg, ow, hook = v.model, v.ow, v.hook

    def fn():
        if hook is not None:
            hook.before_train_iter(runner, runner.iter)
        seg.train_step(data, ow)
        if hook is not None:
            hook.after_train_iter(runner, runner.iter)
        runner.iter += 1
    return fn


def normalized_inputs(data, device):
    import torch
    x = torch.stack(data['inputs']).float().flip(1)  # bgr -> rgb
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def sync(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def count_params(model):
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, train


# --------------------------------------------------------------------------
# memory worker (fresh subprocess per row)
# --------------------------------------------------------------------------
def _proc_status(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024.  # kB -> MiB
    raise RuntimeError(f'{key} not in /proc/self/status')


def _reset_hwm():
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def memory_worker(args, preset, device):
    """Peak memory of one row in this (fresh) process; prints JSON."""
    import torch
    vid = args.memory_worker
    data = make_batch(preset, device)
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
    else:
        base = _proc_status('VmRSS')
    v = build_variant(vid, preset, device, args)
    if v.kind == 'infer':
        v.model.eval()
    step = make_step(v, {}, data, preset, device, args)
    for _ in range(preset['mem_warmup']):
        step()
    peaks, residents = [], []
    for _ in range(preset['mem_steps']):
        sync(device)
        if cuda:
            resident = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:
            resident = _proc_status('VmRSS')
            _reset_hwm()
        step()
        sync(device)
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
            base_mb = base / 2**20
        else:
            peak = _proc_status('VmHWM')
            base_mb = base
        peaks.append(peak - base_mb)
        residents.append(resident - base_mb)
    i = max(range(len(peaks)), key=peaks.__getitem__)
    out = dict(peak=peaks[i], resident=residents[i],
               step_peak=peaks[i] - residents[i])
    print(f'MEMORY_JSON {vid} ' + json.dumps(out), flush=True)


def memory_server(args, preset, device):
    """Fork one child per row from this process, which has imported
    everything but run no torch computation (no OpenMP pool, no CUDA
    context): every row gets a fresh heap without paying for the imports."""
    for vid in args.memory_server.split(','):
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                args.memory_worker = vid
                memory_worker(args, preset, device)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print(f'MEMORY_FAILED {vid}', flush=True)


def measure_memory(ids, args):
    """Peak memory of every row, each in its own process (see the module
    doc). Returns {row: {'peak', 'resident', 'step_peak'}} in MiB."""
    cmd = [sys.executable, os.path.abspath(__file__), '--preset',
           args.preset, '--device', args.device, '--threads',
           str(args.threads), '--amp-dtype', args.amp_dtype]
    for flag in ('mem_warmup', 'mem_steps'):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads),
               MALLOC_MMAP_THRESHOLD_='65536',
               MALLOC_TRIM_THRESHOLD_='65536')
    if args.device == 'cuda':
        # A CUDA context cannot cross fork(): one subprocess per row.
        jobs = [cmd + ['--memory-worker', vid] for vid in ids]
    else:
        jobs = [cmd + ['--memory-server', ','.join(ids)]]
    out = {}
    for job in jobs:
        res = subprocess.run(job, env=env, capture_output=True, text=True)
        for line in res.stdout.splitlines():
            if line.startswith('MEMORY_JSON '):
                vid, js = line[len('MEMORY_JSON '):].split(' ', 1)
                out[vid] = json.loads(js)
        missing = [v for v in ids if v not in out and
                   (len(jobs) == 1 or job[-1] == v)]
        if missing:
            raise RuntimeError(
                f'memory measurement failed for {missing} (rc '
                f'{res.returncode}):\n{res.stdout[-2000:]}\n'
                f'{res.stderr[-4000:]}')
    return out


# --------------------------------------------------------------------------
# statistics, extras, targets
# --------------------------------------------------------------------------
def summarize(samples):
    s = sorted(samples)
    if len(s) >= 2:
        q1, _, q3 = statistics.quantiles(s, n=4, method='inclusive')
    else:
        q1 = q3 = s[0]
    return dict(median=statistics.median(s), q1=q1, q3=q3, iqr=q3 - q1,
                min=s[0], max=s[-1], samples=list(samples))


def time_mapping_update(preset, device, reps):
    """One ClassPromptMapping.update(): k-means of 150 classes x 1024 dims
    into 10 prompts (cold start first, then warm starts)."""
    import torch
    from davpt_seg.models.utils import ClassPromptMapping
    m = ClassPromptMapping(150, 10, 1024).to(device)
    g = torch.Generator().manual_seed(1)
    present = torch.eye(150, dtype=torch.bool, device=device)
    cold, warm = None, []
    for r in range(reps + 1):
        m.accumulate(torch.randn(150, 1024, generator=g).to(device), present)
        sync(device)
        t0 = time.perf_counter()
        m.update()
        sync(device)
        dt = (time.perf_counter() - t0) * 1e3
        if r == 0:
            cold = dt
        else:
            warm.append(dt)
    return dict(cold_ms=cold, warm=summarize(warm),
                shape='150 classes x 1024 dims -> 10 prompts')


def time_initial_pass(v, data, device, reps):
    """The hook's initial-mapping work for one batch: data preprocessor,
    prompt-free ``forward_cls``, class presence and ``accumulate``."""
    import torch
    hook, seg = v.hook, v.model
    samples = []
    for r in range(reps + 1):
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            seg.backbone.eval()
            batch = seg.data_preprocessor(data, True)
            cls = seg.backbone.forward_cls(batch['inputs'])
            hook.mapping.accumulate(cls.float(),
                                    hook._present(batch['data_samples']))
            seg.backbone.train()
        sync(device)
        if r:
            samples.append((time.perf_counter() - t0) * 1e3)
    hook.mapping.feat_sum.zero_()
    hook.mapping.feat_count.zero_()
    return summarize(samples)


def check_schema(result):
    """Every row carries every figure (``tests/test_benchmark.py`` checks
    the same from the outside)."""
    for r in result['rows']:
        missing = [k for k in ROW_KEYS if k not in r]
        missing += [f'time_ms.{k}' for k in TIME_KEYS
                    if k not in r['time_ms']]
        if r['memory_mb'] is not None:
            missing += [f'memory_mb.{k}' for k in MEMORY_KEYS
                        if k not in r['memory_mb']]
        if missing:
            raise RuntimeError(f"row {r['id']} lacks {missing}")


def evaluate_targets(rows, extras, no_verdict=None):
    """The issue's targets. Time ratios compare wall-time medians; each also
    carries the ratio of process-CPU-time medians (``value_cpu_time``),
    which is far less sensitive to other processes on a shared CPU.

    Each target has ``met`` (bool) and ``verdict`` ('met' / 'MISSED'); with
    ``no_verdict`` (a reason, for presets whose ratios mean nothing) ``met``
    is None and ``verdict`` is that reason."""
    t = {r['id']: r['time_ms']['median'] for r in rows}
    c = {r['id']: r['cpu_time_ms']['median'] for r in rows}
    m = {r['id']: r['memory_mb']['peak'] for r in rows
         if r['memory_mb'] is not None}
    out = []

    def ratio(a, b, d):
        return d[a] / d[b] if a in d and b in d else None

    def add(tid, desc, value, limit, cmp='<=', cpu=None):
        if value is None:
            return
        met = bool(value <= limit if cmp == '<=' else value >= limit)
        if no_verdict:
            met, verdict = None, no_verdict
        else:
            verdict = 'met' if met else 'MISSED'
        out.append(dict(id=tid, description=desc, value=value, limit=limit,
                        comparison=cmp, met=met, verdict=verdict,
                        value_cpu_time=cpu))

    def add_time(tid, desc, a, b, limit):
        add(tid, desc, ratio(a, b, t), limit, cpu=ratio(a, b, c))

    def add_cut(tid, desc, a, b):
        if a in m and b in m:
            add(tid, desc, 1. - m[a] / m[b], 0.40, cmp='>=')

    add_time('davpt_vs_vpt_time', 'DA-VPT step / VPT-Deep step', 'davpt',
             'vpt', 1.03)
    add_time('davpt_plus_vs_vpt_time', 'DA-VPT+ step / VPT-Deep step',
             'davpt_plus', 'vpt', 1.05)
    add_time('prompted_bb_vs_full_ft_time',
             'prompted backbone training step / stock ViT full fine-tuning '
             '(backbone alone)', 'bb_vpt', 'bb_full_ft', 0.8)
    add_time('davpt_vs_full_ft_time',
             'DA-VPT training step / full fine-tuning (whole segmentor: the '
             'shared SETR-PUP heads dilute the backbone saving)', 'davpt',
             'full_ft', 0.8)
    add('davpt_vs_full_ft_mem', 'DA-VPT peak memory / full fine-tuning',
        ratio('davpt', 'full_ft', m), 1.0)
    add_cut('cp_heads_mem_cut', '--with-cp (backbone + heads): cut of '
            'DA-VPT peak training memory (whole segmentor)',
            'davpt_cp_heads', 'davpt')
    add_cut('cp_mem_cut', 'backbone with_cp only: cut of DA-VPT peak '
            'training memory (whole segmentor)', 'davpt_cp', 'davpt')
    add_cut('cp_mem_cut_bb', 'with_cp: cut of the prompted backbone\'s peak '
            'training memory (backbone alone)', 'bb_vpt_cp', 'bb_vpt')
    add_time('cp_heads_time', '--with-cp (backbone + heads): DA-VPT step '
             'time ratio (whole segmentor)', 'davpt_cp_heads', 'davpt', 1.4)
    add_time('cp_time', 'backbone with_cp only: DA-VPT step time ratio '
             '(whole segmentor)', 'davpt_cp', 'davpt', 1.4)
    add_time('cp_time_bb', 'with_cp: prompted backbone step time ratio '
             '(backbone alone)', 'bb_vpt_cp', 'bb_vpt', 1.4)
    add_time('infer_vs_stock', 'prompted inference / stock ViT inference '
             '(backbone + decode head)', 'infer_prompted', 'infer_stock',
             1.05)
    add_time('infer_bb_vs_stock', 'prompted backbone inference / stock ViT '
             'backbone inference', 'infer_bb_prompted', 'infer_bb_stock',
             1.05)
    mu = extras.get('mapping_update_ms')
    if mu:
        add('mapping_update', 'mapping update (k-means 150 x 1024), ms, '
            'worst of cold start and warm median',
            max(mu['cold_ms'], mu['warm']['median']), 100.)
    return out


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def fmt(x, nd=2):
    if x is None:
        return '-'
    return f'{x:.{nd}f}'


def markdown(result):
    meta = result['meta']
    lines = [
        f"# DA-VPT benchmark: preset `{meta['preset']}` on {meta['device']}",
        '',
        f"- device: {meta['device_name']}; torch {meta['torch']}, mmseg "
        f"{meta['mmseg']}, mmengine {meta['mmengine']}; threads "
        f"{meta['threads']}",
        f"- model: {meta['model']}",
        f"- input: batch {meta['batch']}, {meta['crop']}x{meta['crop']}, "
        f"{meta['num_classes']} classes; {meta['warmup']} warm-up + "
        f"{meta['reps']} timed repetitions, variants round-robin "
        '(order rotated every repetition)',
        f"- time: {meta['time_measure']}; 'CPU ms' is this process's CPU "
        'time per step (user + system, all threads)',
        f"- memory: {meta['memory_measure']}",
        f"- AMP: {meta['amp_mode']}",
    ]
    lines.append(f"- run time of the whole benchmark: {meta['total_s']:.0f} s")
    ol = meta.get('other_load')
    if ol and meta['device'] == 'cpu':
        lines.append(
            f"- load from other processes during the timed phase: "
            f"{ol['cpus_busy_by_others']:.2f} of {ol['cpus']} CPUs busy on "
            'average' + (' (timings are inflated and noisy)'
                         if ol['cpus_busy_by_others'] > 0.2 else ''))
    lines += [
        '',
        '| row | variant | trainable params | step ms (median) | IQR (min-max)'
        ' | CPU ms | x VPT | x full FT | peak MiB | resident MiB | step peak '
        'MiB | mem x VPT | mem x full FT |',
        '|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in result['rows']:
        tm, mm, ra = r['time_ms'], r['memory_mb'], r['ratios']
        spread = (f"{fmt(tm['q1'], 0)}-{fmt(tm['q3'], 0)} "
                  f"({fmt(tm['min'], 0)}-{fmt(tm['max'], 0)})")
        if r['kind'] == 'infer':
            tr = (f"x stock {fmt(ra['time_vs_stock'])}", '')
            mr = (f"x stock {fmt(ra['mem_vs_stock'])}", '')
        else:
            tr = (fmt(ra['time_vs_vpt']), fmt(ra['time_vs_full_ft']))
            mr = (fmt(ra['mem_vs_vpt']), fmt(ra['mem_vs_full_ft']))
        mem = mm or {}
        lines.append(
            f"| {r['row']} | `{r['id']}` {r['description']} | "
            f"{r['trainable_params'] / 1e6:.3f}M | {fmt(tm['median'], 1)} | "
            f"{spread} | {fmt(r['cpu_time_ms']['median'], 0)} | {tr[0]} | "
            f"{tr[1]} | {fmt(mem.get('peak'), 0)} | "
            f"{fmt(mem.get('resident'), 0)} | {fmt(mem.get('step_peak'), 0)}"
            f" | {mr[0]} | {mr[1]} |")
    ex = result['extras']
    lines += ['', '## Per-iteration and mapping costs', '']
    mu = ex.get('mapping_update_ms')
    if mu:
        lines.append(
            f"- mapping update ({mu['shape']}): cold start "
            f"{fmt(mu['cold_ms'])} ms, warm start median "
            f"{fmt(mu['warm']['median'])} ms (min {fmt(mu['warm']['min'])},"
            f" max {fmt(mu['warm']['max'])}); every {MAPPING_INTERVAL} "
            'iterations on ADE20K')
    ip = ex.get('initial_mapping_per_batch_ms')
    if ip:
        lines.append(f"- initial mapping pass, per batch of {meta['batch']}: "
                     f"median {fmt(ip['median'])} ms (min {fmt(ip['min'])}, "
                     f"max {fmt(ip['max'])})")
    hk = ex.get('hook_forward_ms')
    if hk:
        lines.append(f"- DAVPTHook forward hook (class draw, statistics, "
                     f"metric losses; host time): median "
                     f"{fmt(hk['median'])} ms")
    lines += ['', '## Targets', '',
              '| target | value | (CPU-time ratio) | limit | verdict |',
              '|---|---:|---:|---:|---|']
    for t in result['targets']:
        lim = f"{t['comparison']} {fmt(t['limit'])}"
        lines.append(f"| {t['description']} | {fmt(t['value'], 3)} | "
                     f"{fmt(t['value_cpu_time'], 3)} | {lim} |"
                     f" {t['verdict']} |")
    return '\n'.join(lines) + '\n'


def cpu_load_snapshot():
    """(wall s, busy CPU s of the whole machine, CPU s of this process)."""
    try:
        with open('/proc/stat') as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = sum(fields[:8]) - fields[3] - fields[4]  # minus idle, iowait
        busy /= os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        busy = None
    return time.perf_counter(), busy, time.process_time()


def other_cpu_load(a, b):
    """Mean number of CPUs that other processes kept busy between two
    snapshots (Linux only; None elsewhere)."""
    if a[1] is None or b[1] is None or b[0] <= a[0]:
        return None
    others = (b[1] - a[1]) - (b[2] - a[2])
    return dict(cpus_busy_by_others=max(0., others / (b[0] - a[0])),
                cpus=os.cpu_count())


def cpu_model_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', choices=sorted(PRESETS), default='cpu-small')
    p.add_argument('--device', default='auto',
                   help="'auto' (cuda if available), 'cpu' or 'cuda'")
    p.add_argument('--threads', type=int, default=2,
                   help='torch CPU threads (also OMP_NUM_THREADS of the '
                   'memory subprocesses)')
    p.add_argument('--amp', action='store_true',
                   help='add AMP rows (CUDA: AmpOptimWrapper with '
                   '--amp-dtype; CPU: bf16 autocast)')
    p.add_argument('--amp-dtype', default='float16',
                   choices=('float16', 'bfloat16'),
                   help='CUDA AMP dtype (CPU always uses bfloat16)')
    p.add_argument('--reps', type=int, default=None,
                   help='timed repetitions (default: the preset\'s)')
    p.add_argument('--warmup', type=int, default=None)
    p.add_argument('--no-memory', action='store_true',
                   help='skip the per-row memory subprocesses')
    p.add_argument('--only', nargs='+', default=None,
                   help='time only these rows (debugging; the JSON then '
                   'lacks rows)')
    p.add_argument('--profile', default=None, metavar='ROW',
                   help='also print a torch.profiler table of one step of '
                   'ROW')
    p.add_argument('--out-dir', default=None,
                   help='default: work_dirs/benchmark/<preset>-<device>')
    p.add_argument('--memory-only', action='store_true',
                   help='only measure (and print) the peak memory of the '
                   'rows, no timing, no files')
    p.add_argument('--mem-warmup', type=int, default=None,
                   help="steps before the memory measurement (default: the "
                   "preset's)")
    p.add_argument('--mem-steps', type=int, default=None,
                   help="measured steps, the peak is the worst (default: the "
                   "preset's)")
    p.add_argument('--memory-worker', default=None, help=argparse.SUPPRESS)
    p.add_argument('--memory-server', default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def setup(args):
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    import davpt_seg.compat  # (registers the components)
    davpt_seg.compat.install()
    from mmengine.logging import MMLogger
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    MMLogger.get_instance('davpt_benchmark', log_level='ERROR')
    register_cpu_amp()
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(args.device)


def main(argv=None):
    args = parse_args(argv)
    device = setup(args)
    import torch
    preset = dict(PRESETS[args.preset])
    for flag in ('mem_warmup', 'mem_steps'):
        if getattr(args, flag) is not None:
            preset[flag] = getattr(args, flag)
    if args.memory_worker:
        memory_worker(args, preset, device)
        return
    if args.memory_server:
        memory_server(args, preset, device)
        return
    warmup = preset['warmup'] if args.warmup is None else args.warmup
    reps = preset['reps'] if args.reps is None else args.reps
    ids = variant_ids(args.amp)
    if args.only:
        bad = [v for v in args.only if v not in VARIANTS]
        if bad:
            raise SystemExit(f'unknown rows {bad}; rows: {list(VARIANTS)}')
        ids = [v for v in ids if v in args.only]
    if args.memory_only:
        mem = measure_memory(ids, args)
        print('| row | peak MiB | resident MiB | step peak MiB |\n'
              '|---|---:|---:|---:|')
        for vid in ids:
            m = mem[vid]
            print(f"| `{vid}` | {m['peak']:.0f} | {m['resident']:.0f} | "
                  f"{m['step_peak']:.0f} |")
        return
    data = make_batch(preset, device)

    t_start = time.perf_counter()
    print(f'[benchmark] preset {args.preset} on {device}: building '
          f'{len(ids)} rows', flush=True)
    models, steps, params = {}, {}, {}
    for vid in ids:
        if VARIANTS[vid][1] == 'infer' and INFER_SOURCE[vid] in ids:
            continue  # reuses the training row's model
        models[vid] = build_variant(vid, preset, device, args)
    for vid in ids:
        v = models.get(vid)
        if v is None:
            v = SimpleNamespace(id=vid, kind='infer', opt=VARIANTS[vid][4])
        steps[vid] = make_step(v, models, data, preset, device, args)
        src = models[vid] if vid in models else models[INFER_SOURCE[vid]]
        net = src.model
        if VARIANTS[vid][4].get('backbone_only') and hasattr(net, 'backbone'):
            net = net.backbone
        total, train = count_params(net)
        params[vid] = (total, 0 if VARIANTS[vid][1] == 'infer' else train)

    samples = {vid: [] for vid in ids}
    cpu_samples = {vid: [] for vid in ids}
    load0 = cpu_load_snapshot()
    hook_call = models['davpt'].hook._add_metric_losses \
        if 'davpt' in models else None
    for r in range(warmup + reps):
        order = ids[r % len(ids):] + ids[:r % len(ids)]
        for vid in order:
            timed = r >= warmup
            if hook_call is not None:
                hook_call.record = timed and vid == 'davpt'
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            steps[vid]()
            sync(device)
            if timed:
                samples[vid].append((time.perf_counter() - t0) * 1e3)
                cpu_samples[vid].append((time.process_time() - c0) * 1e3)
        print(f'[benchmark] {"warm-up" if r < warmup else "repetition"} '
              f'{r + 1}/{warmup + reps} done '
              f'({time.perf_counter() - t_start:.0f} s)', flush=True)

    other_load = other_cpu_load(load0, cpu_load_snapshot())
    extras = {}
    if hook_call is not None and hook_call.samples:
        extras['hook_forward_ms'] = summarize(hook_call.samples)
    extras['mapping_update_ms'] = time_mapping_update(
        preset, device, preset['mapping_reps'])
    if 'davpt' in models:
        extras['initial_mapping_per_batch_ms'] = time_initial_pass(
            models['davpt'], data, device, max(2, reps))

    if args.profile:
        profile_row(args.profile, steps, device)

    mem = {}
    if not args.no_memory:
        del models, steps
        print(f'[benchmark] peak memory of {len(ids)} rows, one process '
              'each', flush=True)
        mem = measure_memory(ids, args)

    rows = []
    for vid in ids:
        row, kind, _, desc, _ = VARIANTS[vid]
        rows.append(dict(id=vid, row=row, kind=kind, description=desc,
                         trainable_params=params[vid][1],
                         total_params=params[vid][0],
                         time_ms=summarize(samples[vid]),
                         cpu_time_ms=summarize(cpu_samples[vid]),
                         memory_mb=mem.get(vid), ratios={}))
    by_id = {r['id']: r for r in rows}

    def rt(a, b, key):
        if b not in by_id:
            return None
        if key == 'time':
            return a['time_ms']['median'] / by_id[b]['time_ms']['median']
        if a['memory_mb'] is None or by_id[b]['memory_mb'] is None:
            return None
        return a['memory_mb']['peak'] / by_id[b]['memory_mb']['peak']

    for r in rows:
        if r['kind'] == 'infer':
            ref = INFER_REF[r['id']]
            r['ratios'] = dict(time_vs_stock=rt(r, ref, 'time'),
                               mem_vs_stock=rt(r, ref, 'mem'))
        else:
            ref_v = 'bb_vpt' if r['id'].startswith('bb_') else 'vpt'
            ref_f = 'bb_full_ft' if r['id'].startswith('bb_') else 'full_ft'
            r['ratios'] = dict(time_vs_vpt=rt(r, ref_v, 'time'),
                               time_vs_full_ft=rt(r, ref_f, 'time'),
                               mem_vs_vpt=rt(r, ref_v, 'mem'),
                               mem_vs_full_ft=rt(r, ref_f, 'mem'))

    import mmengine
    import mmseg
    cuda = device.type == 'cuda'
    result = dict(
        meta=dict(
            preset=args.preset, device=device.type,
            device_name=(torch.cuda.get_device_name(device) if cuda else
                         f'{cpu_model_name()}, {os.cpu_count()} logical '
                         'CPUs'),
            torch=torch.__version__, mmseg=mmseg.__version__,
            mmengine=mmengine.__version__, python=platform.python_version(),
            threads=args.threads, batch=preset['batch'],
            crop=preset['crop'], num_classes=preset['num_classes'],
            warmup=warmup, reps=reps, amp=args.amp,
            amp_mode=(('CUDA AmpOptimWrapper, ' + args.amp_dtype) if cuda
                      else 'CPU torch.autocast bfloat16 (no loss scaling)')
            if args.amp else 'off',
            model=(f"ViT {preset['num_layers']} layers x "
                   f"{preset['embed_dims']} dims ({preset['num_heads']} "
                   f"heads), patch 16, SETR-PUP heads of "
                   f"{preset['head_channels']} channels (1 main + "
                   f"{len(preset['aux_in_index'])} auxiliary), prompts "
                   f"{preset['num_prompts']} per layer, "
                   f"{preset['num_proxy_prompts']} proxies in layers "
                   f"{list(preset['guided_layers'])}"),
            time_measure='wall time of one step (perf_counter'
            + (', CUDA synchronised' if cuda else '') + '), all rows in '
            'one process; IQR = q1-q3 of the timed repetitions',
            memory_measure='not measured' if args.no_memory else (
                'torch.cuda.max_memory_allocated over a step, in a fresh '
                'subprocess per row (peak = weights + optimiser state + '
                'step; resident = allocated before the step)' if cuda else
                'peak RSS (VmHWM, reset via /proc/self/clear_refs) during a '
                'step, minus the RSS before the model was built, in a fresh '
                'subprocess per row with MALLOC_MMAP_THRESHOLD_=65536 '
                '(peak = weights + optimiser state + step; resident = RSS '
                'before the step)'),
            other_load=other_load,
            total_s=time.perf_counter() - t_start,
            preset_cfg=preset),
        rows=rows, extras=extras)
    result['targets'] = evaluate_targets(
        rows, extras, no_verdict=SCHEMA_ONLY_PRESETS.get(args.preset))
    check_schema(result)

    out_dir = args.out_dir or os.path.join(
        'work_dirs', 'benchmark', f'{args.preset}-{device.type}')
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)
    md = markdown(result)
    with open(os.path.join(out_dir, 'benchmark.md'), 'w') as f:
        f.write(md)
    print(md)
    print(f'[benchmark] wrote {out_dir}/benchmark.json and benchmark.md '
          f'in {time.perf_counter() - t_start:.0f} s', flush=True)


def profile_row(vid, steps, device):
    import torch
    from torch.profiler import ProfilerActivity, profile
    if vid not in steps:
        raise SystemExit(f'--profile {vid}: not among the timed rows')
    acts = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    steps[vid]()
    with profile(activities=acts) as prof:
        steps[vid]()
        sync(device)
    key = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
    print(prof.key_averages().table(sort_by=key, row_limit=30))
    print(prof.key_averages().table(sort_by='self_' + key, row_limit=30))


if __name__ == '__main__':
    main()
