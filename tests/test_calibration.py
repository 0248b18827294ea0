"""The calibration layer on a matrix of tiny random models of common Hub architectures.

* With no method at all, the sequential calibration path (one batch, lock-step chunks and the
  two-pass mode) gives every block exactly the outputs of the model's plain forward: each block
  is replayed with the arguments the model passes to *that* block (sliding-window vs global
  layers, T5 position biases, the decoder's encoder states, routed experts).
* Wanda / SparseGPT / magnitude: exact sparsity counts and 2:4 groups on every architecture
  (Linear, GPT-2 Conv1D in its [in, out] orientation, fused 3-D experts, routers untouched).
* Calibrated NF4 on every text architecture; BOS defaults of calibration and perplexity windows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hfcompress.calibration import Sequential, find_block_stacks, find_targets
from hfcompress.calibration.capture import first_tensor, model_inputs
from hfcompress.calibration.targets import Conv1DTarget, ExpertTarget
from hfcompress.config import CalibrationConfig
from hfcompress.errors import UsageError
from hfcompress.loading import ModelBundle, detect_task
from hfcompress.prune import MagnitudeConfig, SparseGPTConfig, WandaConfig
from hfcompress.prune.engine import arch_info, target_linears
from hfcompress.stage import StageContext, run_stage
from hfcompress.testing.models import ARCHS, tiny_arch, tiny_inputs, tiny_tokenizer

TEXT = [a for a in ARCHS if a not in ("vit", "whisper")]


def block_outputs(model, fn) -> dict[tuple[int, int], torch.Tensor]:
    """Each block's output hidden states (cloned at once) while ``fn()`` runs."""
    outs: dict[tuple[int, int], torch.Tensor] = {}
    handles = []
    for si, stack in enumerate(find_block_stacks(model)):
        for i, block in enumerate(stack.blocks):
            def hook(m, a, o, k=(si, i)):
                outs[k] = first_tensor(o).detach().clone()
            handles.append(block.register_forward_hook(hook))
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return outs


@pytest.mark.parametrize("arch", list(ARCHS))
def test_sequential_replays_the_plain_forward(arch):
    model = tiny_arch(arch)
    batch = tiny_inputs(model, samples=3, seq_len=16)
    ref = block_outputs(model, lambda: model(**model_inputs(model, batch)))
    stacks = find_block_stacks(model)
    assert len(ref) == sum(len(s) for s in stacks) >= 2
    targets = find_targets(model, stacks)
    for mode in (dict(batch_size=None), dict(batch_size=1), dict(batch_size=2, in_order=False)):
        groups: list[list[str]] = []
        seq = Sequential(model, None, targets, lambda names, x, groups=groups: groups.append(names), lambda names, x: None,
                         stacks=stacks, **mode)
        got = block_outputs(model, lambda seq=seq: seq.run(batch))
        assert set(got) == set(ref)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"{arch} {mode} block {k}")
        # every target belongs to exactly one group, each group handled once
        flat = [n for g in groups for n in g]
        assert sorted(flat) == sorted(targets)
    if getattr(model.config, "is_encoder_decoder", False):
        cross = [g for g in groups if any(".1." in n or "encoder_attn" in n or "EncDec" in n for n in g)]
        assert cross  # cross-attention: q reads the decoder states, k/v the encoder's (own group)


def test_gemma3_layers_get_their_own_masks_and_rotary():
    """Sliding-window and global layers are called with different arguments (not block 0's)."""
    model = tiny_arch("gemma3_text")
    calls: list[dict] = []

    def fn(g, stack, i, block, fwd, args, kwargs):
        calls.append(kwargs)
        return fwd(*args, **kwargs)

    from hfcompress.calibration.capture import run_through_blocks

    run_through_blocks(model, find_block_stacks(model), model_inputs(model, tiny_inputs(model)), fn)
    assert len(calls) == 6  # five sliding-window layers, then a global one
    pe = [c["position_embeddings"][0] for c in calls]
    assert torch.equal(pe[0], pe[1]) and not torch.equal(pe[0], pe[5])  # local vs global rope base


def test_t5_and_bart_decoder_blocks_see_the_encoder():
    for arch in ("t5", "bart"):
        model = tiny_arch(arch)
        seen = []

        def fn(g, stack, i, block, fwd, args, kwargs, seen=seen):
            hs = args[0] if args else kwargs["hidden_states"]
            rest = [v for v in (*args[1:], *kwargs.values()) if isinstance(v, torch.Tensor) and v is not hs]
            seen.append((stack.role, any(v.shape == hs.shape for v in rest)))  # encoder states [n, seq, d]
            return fwd(*args, **kwargs)

        from hfcompress.calibration.capture import run_through_blocks

        run_through_blocks(model, find_block_stacks(model), model_inputs(model, tiny_inputs(model)), fn)
        assert [r for r, _ in seen] == ["encoder", "encoder", "decoder", "decoder"]
        assert all(enc for r, enc in seen if r == "decoder")


# -- methods ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cal_dataset(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("caltext")
    g = torch.Generator().manual_seed(0)
    words = "the quick model prunes small weights while calibration text measures every input".split()
    lines = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (30,), generator=g)) for _ in range(60)]
    (Path(folder) / "train.txt").write_text("\n".join(lines) + "\n")
    return str(folder)


def bundle_of(arch: str, seed: int = 0) -> ModelBundle:
    model = tiny_arch(arch, seed)
    return ModelBundle(model, tiny_tokenizer(model.config.vocab_size), detect_task(model.config))


def targets_of(model):
    return target_linears(model, arch_info(model), None)


def check_exact(model, sparsity: float, per: str):
    for name, t in targets_of(model).items():
        w = t.weight
        zeros = int((w == 0).sum())
        rows, cols = w.shape
        want = rows * round(cols * sparsity) if per == "row" else round(rows * cols * sparsity)
        assert zeros == want, (name, zeros, want)


def check_nm(model, n: int, m: int):
    for name, t in targets_of(model).items():
        w = t.weight
        groups = (w.reshape(w.shape[0], -1, m) == 0).sum(-1)
        assert bool((groups == m - n).all()), name


def cal(ds: str) -> CalibrationConfig:
    return CalibrationConfig(dataset=ds, samples=4, seq_len=16)


@pytest.mark.parametrize("arch", TEXT)
def test_unstructured_exact_and_nm_on_every_arch(arch, cal_dataset):
    for cfg, per in ((WandaConfig(sparsity=0.5, calibration=cal(cal_dataset)), "row"),
                     (SparseGPTConfig(sparsity=0.5, calibration=cal(cal_dataset)), "layer"),
                     (MagnitudeConfig(sparsity=0.5), "layer")):
        b = bundle_of(arch)
        routers = {n: p.detach().clone() for n, p in b.model.named_parameters() if "gate.weight" in n
                   and "gate_proj" not in n and "gate_up" not in n}
        summary = run_stage(b, cfg, StageContext(progress=False))["summary"]
        assert summary["target_sparsity_actual"] == 0.5, (arch, cfg.method)
        check_exact(b.model, 0.5, per)
        for n, p in b.model.named_parameters():  # router / gate layers never pruned
            if n in routers:
                assert torch.equal(p, routers[n]), n
    for cfg in (WandaConfig(pattern="2:4", calibration=cal(cal_dataset)),
                SparseGPTConfig(pattern="2:4", calibration=cal(cal_dataset)), MagnitudeConfig(pattern="2:4")):
        b = bundle_of(arch)
        run_stage(b, cfg, StageContext(progress=False))
        check_nm(b.model, 2, 4)


def test_targets_cover_conv1d_and_every_expert():
    gpt2 = tiny_arch("gpt2")
    t = targets_of(gpt2)
    assert all(isinstance(x, Conv1DTarget) for x in t.values()) and len(t) == 8
    c = t["transformer.h.0.mlp.c_fc"]
    assert (c.out_features, c.in_features) == (128, 64) and c.weight.shape == (128, 64)
    for arch in ("mixtral", "qwen3_moe"):
        model = tiny_arch(arch)
        t = targets_of(model)
        experts = [n for n, x in t.items() if isinstance(x, ExpertTarget)]
        n_exp = getattr(model.config, "num_local_experts", None) or model.config.num_experts
        assert len(experts) == 2 * n_exp * model.config.num_hidden_layers
        assert not any(n.endswith(".gate") or "router" in n for n in t)


def test_idle_expert_falls_back_to_magnitude(cal_dataset):
    """An expert no token is routed to is pruned by magnitude and named in the summary."""
    b = bundle_of("mixtral")
    def never_3(module, args, out):  # route expert 3's tokens to expert 0: expert 3 gets none
        logits, weights, index = out
        return logits, weights, torch.where(index == 3, torch.zeros_like(index), index)

    b.model.model.layers[0].mlp.gate.register_forward_hook(never_3)
    summary = run_stage(b, WandaConfig(sparsity=0.5, calibration=cal(cal_dataset)),
                        StageContext(progress=False))["summary"]
    idle = summary.get("no_calibration_tokens", [])
    assert "model.layers.0.mlp.experts.gate_up_proj.3" in idle
    assert summary["no_calibration_tokens_fallback"] == "magnitude"
    check_exact(b.model, 0.5, "row")


@pytest.mark.parametrize("arch", ["vit", "whisper"])
def test_non_text_models(arch, cal_dataset):
    """Data-free pruning works; calibrated methods take the model's own modality (tests/test_modality.py)
    and say in one line what is missing: the processor, then an image / audio dataset."""
    from hfcompress.testing.media import tiny_processor

    b = ModelBundle(tiny_arch(arch), None, detect_task(tiny_arch(arch).config))
    run_stage(b, MagnitudeConfig(sparsity=0.5), StageContext(progress=False))
    check_exact(b.model, 0.5, "layer")
    with pytest.raises(UsageError, match="needs its (image processor|feature extractor)") as e:
        run_stage(b, WandaConfig(calibration=cal(cal_dataset)), StageContext(progress=False))
    assert "\n" not in str(e.value)
    b.tokenizer = tiny_processor(arch, b.model.config)
    kind = "image" if arch == "vit" else "audio"
    with pytest.raises(UsageError, match=f"has no {kind} column .* pass an {kind} dataset with --calibration"):
        run_stage(b, WandaConfig(calibration=cal(cal_dataset)), StageContext(progress=False))


#: bitsandbytes' own limits (quantize/base.py, transformers' bnb integration), not the calibration's
NF4_LIMITS = {"falcon": "transformers' bnb integration replaces exact nn.Linear only; Falcon uses FalconLinear"}


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.xfail(strict=True, reason=NF4_LIMITS[a]))
                                  if a in NF4_LIMITS else a for a in TEXT])
def test_calibrated_nf4_on_every_arch(arch, cal_dataset):
    pytest.importorskip("bitsandbytes")
    from hfcompress.quantize import CalibratedNF4Config

    b = bundle_of(arch)
    summary = run_stage(b, CalibratedNF4Config(calibration=cal(cal_dataset)), StageContext(progress=False))["summary"]
    assert summary["calibrated_modules"] > 0
    assert any(type(m).__name__ == "Linear4bit" for m in b.model.modules())


# -- BOS ------------------------------------------------------------------------------------------

def test_calibration_windows_start_with_bos_when_the_tokenizer_adds_it(cal_dataset):
    from tokenizers import processors

    from hfcompress.data import bos_to_add, calibration_ids

    tok = tiny_tokenizer(128)
    assert bos_to_add(tok) is None  # adds no BOS itself: windows are plain text
    plain = calibration_ids(tok, cal(cal_dataset))
    assert int(plain[0, 0]) != tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    assert tok("ab").input_ids[0] == tok.bos_token_id
    assert bos_to_add(tok) == tok.bos_token_id
    ids = calibration_ids(tok, cal(cal_dataset))
    assert ids.shape == plain.shape and bool((ids[:, 0] == tok.bos_token_id).all())
    assert torch.equal(ids[:, 1:], plain[:, :-1])  # same windows, BOS first


def test_perplexity_agrees_with_a_plain_transformers_scorer():
    """The evaluator (BOS by default where the tokenizer adds it) vs transformers' own loss."""
    from tokenizers import processors

    from hfcompress.data import bos_to_add
    from hfcompress.evaluate.perplexity import perplexity_of_ids

    model = tiny_arch("llama")
    tok = tiny_tokenizer(128)
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    ids = torch.randint(4, 128, (100,), generator=torch.Generator().manual_seed(0))
    bos = bos_to_add(tok)
    ours = perplexity_of_ids(model, ids, seq_len=32, bos_token_id=bos)
    nll, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, ids.numel() - 1, 32):
            seg = ids[begin:begin + 32]
            x = torch.cat([torch.tensor([bos]), seg])[None]
            labels = x.clone()
            labels[0, :2] = -100  # BOS is context; a window's first token is not scored (the protocol)
            out = model(input_ids=x, labels=labels)
            n = int((labels[0, 1:] != -100).sum())
            nll += float(out.loss) * n
            count += n
    assert ours["tokens"] == count
    assert math.isclose(ours["perplexity"], math.exp(nll / count), rel_tol=1e-5)


@pytest.mark.parametrize("width", [64, 300, 1536])
def test_hessians_upper_triangle_accumulation_is_the_full_gram(width):
    """The Hessian accumulates only its upper block triangle; ``pop`` returns the full, exactly
    symmetric ``X^T X`` (and GPTQ's ``2/N X^T X``) over several chunks."""
    from hfcompress.calibration import Hessians

    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, width, generator=g) for n in (7, 300, 64)]
    x = torch.cat(chunks).double()
    for scale, want in (("sum", x.t() @ x), ("mean2", 2 / x.shape[0] * (x.t() @ x))):
        acc = Hessians(scale=scale)
        for c in chunks:
            acc.add("k", c)
        H, tokens = acc.pop("k")
        assert tokens == x.shape[0]
        assert torch.equal(H, H.t())
        torch.testing.assert_close(H.double(), want, rtol=1e-5, atol=1e-3)
    assert Hessians().pop("missing") == (None, 0)


def test_squared_norms_match_the_column_sums_of_squares():
    from hfcompress.calibration import SquaredNorms, squared_norms

    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 40, generator=g)  # more rows than one gemv slice
    tol = {"rtol": 1e-5, "atol": 1e-3}  # float32 sums of 5,000 squares
    torch.testing.assert_close(squared_norms(x), (x.double() ** 2).sum(0).float(), **tol)
    torch.testing.assert_close(squared_norms(x.bfloat16()), (x.bfloat16().double() ** 2).sum(0).float(), **tol)
    acc = SquaredNorms()
    acc.add("k", x[:100])
    acc.add("k", x[100:])
    torch.testing.assert_close(acc.pop_norms("k"), x.double().pow(2).sum(0).sqrt().float(), **tol)
    assert acc.pop_norms("k") is None


def test_calibration_run_freezes_only_for_its_duration():
    """Long-lived objects are left out of the per-block collections during a run, and unfrozen after
    it (a freeze made by someone else is kept)."""
    import gc

    from hfcompress.calibration.data import frozen_gc

    gc.unfreeze()
    with frozen_gc():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        with frozen_gc():
            pass
        assert gc.get_freeze_count() >= before
    finally:
        gc.unfreeze()
