# Copied unchanged (below this line) from shared/fixtures/fla_cpu_patch.py, which made the fixture references in tests/fixtures/.
"""Make fla 0.6.0's GatedDeltaNetForCausalLM run on CPU by replacing every Triton kernel on its
forward (and training) path with an equivalent PyTorch implementation. Import this module BEFORE
building / loading a model:

    import fla_cpu_patch  # noqa: F401  (patches fla in place)

Each replacement follows the Triton kernel it replaces; file:line references are to the installed
fla 0.6.0 (site-packages/fla/...).  The recurrence itself is fla's own reference code,
fla/ops/gated_delta_rule/naive.py (naive_chunk_gated_delta_rule / naive_recurrent_gated_delta_rule).

After patching, any attempt to launch a Triton kernel raises, so a missed kernel cannot go unnoticed.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

warnings.filterwarnings("ignore", message=".*Triton is not supported on current platform.*")
warnings.filterwarnings("ignore", message=".*ShortConvolution is crucial.*")

import fla  # noqa: E402
import fla.layers.gated_deltanet as _gdn_layer  # noqa: E402
import fla.models.modeling_utils as _mu  # noqa: E402
import fla.modules.mlp as _mlp  # noqa: E402
from fla.modules import FusedRMSNormGated, RMSNorm, ShortConvolution  # noqa: E402
from fla.ops.gated_delta_rule.naive import (  # noqa: E402
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)

# Which recurrence implementation the patched chunk op uses ('chunk' = naive_chunk, 'recurrent' =
# naive_recurrent).  The patched fused_recurrent op always uses naive_recurrent.
CHUNK_IMPL = os.environ.get("GDN_CHUNK_IMPL", "chunk")


# --------------------------------------------------------------------------------------------
# l2norm  --  fla/modules/norm/l2norm.py:36 / :80   rstd = 1 / sqrt(sum(x^2) + eps), eps = 1e-6
#             (l2norm_fwd default eps=1e-6, l2norm.py:112); the fused_recurrent kernel inlines the
#             same formula: fla/ops/gated_delta_rule/fused_recurrent.py:119-120
# --------------------------------------------------------------------------------------------
def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    xf = x.float()
    return (xf / torch.sqrt((xf * xf).sum(-1, keepdim=True) + eps)).to(x.dtype)


# --------------------------------------------------------------------------------------------
# gate     --  fla/ops/gated_delta_rule/gate.py:94-98 (chunk) and fused_recurrent.py:131-137
#              g = -exp(A_log) * softplus(a + dt_bias)       (natural-log decay, fp32)
#              softplus(x) = x if x > 20 else log(1 + exp(x))   (fla/ops/utils/softplus.py:71,86)
#              == torch.nn.functional.softplus(beta=1, threshold=20)
#              (the chunk kernel additionally multiplies by RCP_LN2 and uses exp2 -- identical math)
# --------------------------------------------------------------------------------------------
def gdn_gate(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None) -> torch.Tensor:
    a = a.float()
    if dt_bias is not None:
        a = a + dt_bias.float()
    return -A_log.float().exp() * F.softplus(a)


# --------------------------------------------------------------------------------------------
# beta     --  fla/ops/common/gate.py:30   beta = scale * sigmoid(b),  scale = 2 if allow_neg_eigval
#              (chunk.py:288; fused_recurrent.py:126-129)
# --------------------------------------------------------------------------------------------
def gdn_beta(b: torch.Tensor, allow_neg_eigval: bool) -> torch.Tensor:
    return torch.sigmoid(b.float()) * (2.0 if allow_neg_eigval else 1.0)


def _prepare(q, k, v, g, beta, scale, initial_state, use_qk_l2norm_in_kernel, use_beta_sigmoid_in_kernel,
             allow_neg_eigval, state_v_first, use_gate_in_kernel, A_log, dt_bias):
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if use_beta_sigmoid_in_kernel:
        beta = gdn_beta(beta, allow_neg_eigval)
    if use_gate_in_kernel:
        assert A_log is not None
        g = gdn_gate(g, A_log, dt_bias)
    H, HV = q.shape[2], v.shape[2]
    if HV != H:  # GVA: value head hv uses q/k head hv // (HV // H)  (fused_recurrent.py:70)
        q = q.repeat_interleave(HV // H, dim=2)
        k = k.repeat_interleave(HV // H, dim=2)
    if scale is None:
        scale = k.shape[-1] ** -0.5  # chunk.py:569-570
    h0 = initial_state
    if h0 is not None and state_v_first:  # V-first [N, HV, V, K] -> naive's [N, HV, K, V]
        h0 = h0.transpose(-1, -2)
    return q, k, v, g, beta, scale, h0


def _finish(o, ht, q_dtype, output_final_state, state_v_first):
    o = o.to(q_dtype)
    if output_final_state:
        ht = ht.float()
        if state_v_first:
            ht = ht.transpose(-1, -2).contiguous()
    else:
        ht = None
    return o, ht


def _varlen(fn, q, k, v, g, beta, initial_state, output_final_state, cu_seqlens, **kw):
    """cu_seqlens (packed batch of N sequences, B == 1): run each sequence separately (same math)."""
    assert q.shape[0] == 1
    bounds = cu_seqlens.tolist()
    outs, finals = [], []
    for n in range(len(bounds) - 1):
        b0, b1 = bounds[n], bounds[n + 1]
        h0 = initial_state[n:n + 1] if initial_state is not None else None
        o, ht = fn(q[:, b0:b1], k[:, b0:b1], v[:, b0:b1], g=g[:, b0:b1], beta=beta[:, b0:b1], initial_state=h0,
                   output_final_state=output_final_state, **kw)
        outs.append(o)
        finals.append(ht)
    return torch.cat(outs, 1), (torch.cat(finals, 0) if output_final_state else None)


def chunk_gated_delta_rule_torch(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                                 use_qk_l2norm_in_kernel=False, use_beta_sigmoid_in_kernel=False,
                                 allow_neg_eigval=False, state_v_first=False, cu_seqlens=None,
                                 cu_seqlens_cpu=None, chunk_indices=None, cp_context=None, **kwargs):
    """Drop-in for fla.ops.gated_delta_rule.chunk_gated_delta_rule (chunk.py:396-593)."""
    assert cp_context is None, "CP not supported by the CPU patch"
    if cu_seqlens is not None:
        return _varlen(chunk_gated_delta_rule_torch, q, k, v, g, beta, initial_state, output_final_state, cu_seqlens,
                       scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                       use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel, allow_neg_eigval=allow_neg_eigval,
                       state_v_first=state_v_first, **kwargs)
    q_dtype = q.dtype
    chunk_size = kwargs.get("chunk_size", 64)
    qq, kk, vv, gg, bb, scale, h0 = _prepare(
        q, k, v, g, beta, scale, initial_state, use_qk_l2norm_in_kernel, use_beta_sigmoid_in_kernel,
        allow_neg_eigval, state_v_first, kwargs.get("use_gate_in_kernel", False), kwargs.get("A_log"),
        kwargs.get("dt_bias"))
    if CHUNK_IMPL == "recurrent":
        o, ht = naive_recurrent_gated_delta_rule(qq, kk, vv, bb, gg, scale=scale, initial_state=h0,
                                                 output_final_state=True)
    else:
        o, ht = naive_chunk_gated_delta_rule(qq, kk, vv, gg, bb, chunk_size=chunk_size, scale=scale,
                                             initial_state=h0, output_final_state=True)
    return _finish(o, ht, q_dtype, output_final_state, state_v_first)


def fused_recurrent_gated_delta_rule_torch(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                           initial_state=None, output_final_state=False,
                                           use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, A_log=None,
                                           dt_bias=None, use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                                           state_v_first=False, cu_seqlens=None, **kwargs):
    """Drop-in for fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule (fused_recurrent.py:309)."""
    assert gk is None and gv is None
    if cu_seqlens is not None:
        return _varlen(fused_recurrent_gated_delta_rule_torch, q, k, v, g, beta, initial_state, output_final_state,
                       cu_seqlens, scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                       use_gate_in_kernel=use_gate_in_kernel, A_log=A_log, dt_bias=dt_bias,
                       use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel, allow_neg_eigval=allow_neg_eigval,
                       state_v_first=state_v_first)
    q_dtype = q.dtype
    qq, kk, vv, gg, bb, scale, h0 = _prepare(
        q, k, v, g, beta, scale, initial_state, use_qk_l2norm_in_kernel, use_beta_sigmoid_in_kernel,
        allow_neg_eigval, state_v_first, use_gate_in_kernel, A_log, dt_bias)
    o, ht = naive_recurrent_gated_delta_rule(qq, kk, vv, bb, gg, scale=scale, initial_state=h0,
                                             output_final_state=True)
    return _finish(o, ht, q_dtype, output_final_state, state_v_first)


# --------------------------------------------------------------------------------------------
# causal depthwise short conv  --  fla/modules/causal_conv1d/ops.py
#   y[t, d] = act( sum_{j=0}^{W-1} w[d, j] * x[t - (W-1) + j, d] + bias[d] )      (ops.py:100-139)
#   x at t < 0 comes from the cache: x[-i] = cache[:, d, W - i]  (i = 1..W-1; ops.py:125-129)
#   act = silu: y * sigmoid(y)   (ops.py:138-139)
#   cache / final state: [N, D, W] = the last W inputs (pre-conv), oldest first, newest at W-1;
#   if T < W the older slots come from the previous cache (ops.py:562-591); decode step shifts the
#   cache left by one and writes x at slot W-1, in place (ops.py:403-437).
# --------------------------------------------------------------------------------------------
def causal_conv1d_torch(x, weight=None, bias=None, residual=None, initial_state=None, output_final_state=False,
                        activation=None, backend=None, cu_seqlens=None, cu_seqlens_cpu=None, chunk_indices=None,
                        cp_context=None, **kwargs):
    assert cp_context is None
    if cu_seqlens is not None:  # packed sequences (B == 1): per-sequence conv + per-sequence cache
        bounds = cu_seqlens.tolist()
        ys, finals = [], []
        for n in range(len(bounds) - 1):
            b0, b1 = bounds[n], bounds[n + 1]
            y, f = causal_conv1d_torch(x[:, b0:b1], weight, bias,
                                       residual[:, b0:b1] if residual is not None else None,
                                       initial_state[n:n + 1] if initial_state is not None else None,
                                       output_final_state, activation)
            ys.append(y)
            finals.append(f)
        return torch.cat(ys, 1), (torch.cat(finals, 0) if output_final_state else None)
    B, T, D = x.shape
    W = weight.shape[1]
    xt = x.transpose(1, 2).float()  # [B, D, T]
    prefix = xt.new_zeros(B, D, W) if initial_state is None else initial_state.float()
    full = torch.cat([prefix, xt], dim=-1)  # [B, D, W + T]
    y = F.conv1d(full[..., 1:], weight.float().unsqueeze(1), bias.float() if bias is not None else None, groups=D)
    y = y.transpose(1, 2)  # [B, T, D]
    if activation in ("silu", "swish"):
        y = F.silu(y)
    if residual is not None:
        y = y + residual.float()
    y = y.to(x.dtype)
    final = full[..., -W:].to(x.dtype).contiguous() if output_final_state else None
    return y, final


def short_conv_forward(self, x, residual=None, mask=None, cache=None, output_final_state=False, cu_seqlens=None,
                       chunk_indices=None, **kwargs):
    """Drop-in for ShortConvolution.forward (ops.py:1205-1281) incl. the in-place decode step (:1249, :1283)."""
    if mask is not None:
        x = x.mul_(mask.unsqueeze(-1))
    B, T = x.shape[:2]
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    weight = self.weight[:, 0, :]  # rearrange(self.weight, "d 1 w -> d w")
    step = (not torch.is_grad_enabled()) and B * T == N and (cu_seqlens is None or bool((cu_seqlens.diff() == 1).all()))
    y, final = causal_conv1d_torch(x, weight, self.bias, residual, cache, output_final_state or step, self.activation,
                                   cu_seqlens=cu_seqlens)
    if step:
        if cache is not None:  # decode kernel updates the cache in place (ops.py:431-437)
            cache.copy_(final)
            final = cache
        return y, (final if output_final_state else None)
    return y, final


# --------------------------------------------------------------------------------------------
# RMSNorm (fuse_norm=True)  --  fla/modules/norm/layernorm.py:80-111 (IS_RMS_NORM)
#   r = x + residual (if residual given; returned as the new residual when prenorm=True)
#   y = r / sqrt(mean(r^2) + eps) * weight  (+ bias)
# --------------------------------------------------------------------------------------------
def rmsnorm_forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
    xf = x.float()
    if residual is not None:
        xf = xf + residual.float()
        res_out = xf.to(residual.dtype)
    else:
        res_out = xf.to(torch.float32) if residual_in_fp32 else x
    rstd = 1.0 / torch.sqrt(xf.square().mean(-1, keepdim=True) + self.eps)
    y = xf * rstd
    if self.weight is not None:
        y = y * self.weight.float()
    if self.bias is not None:
        y = y + self.bias.float()
    y = y.to(x.dtype)
    return (y, res_out) if prenorm else y


# --------------------------------------------------------------------------------------------
# FusedRMSNormGated  --  fla/modules/norm/fused_norm_gate.py:67-107 (IS_RMS_NORM)
#   y = x / sqrt(mean(x^2) + eps) * weight;  swish/silu: y * g * sigmoid(g);  sigmoid: y * sigmoid(g)
# --------------------------------------------------------------------------------------------
def rmsnorm_gated_forward(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
    xf = x.float()
    if residual is not None:
        xf = xf + residual.float()
        res_out = xf.to(residual.dtype)
    else:
        res_out = xf.to(torch.float32) if residual_in_fp32 else x
    y = xf / torch.sqrt(xf.square().mean(-1, keepdim=True) + self.eps)
    if self.weight is not None:
        y = y * self.weight.float()
    if self.bias is not None:
        y = y + self.bias.float()
    gf = g.float()
    if self.activation in ("swish", "silu"):
        y = y * gf * torch.sigmoid(gf)
    elif self.activation == "sigmoid":
        y = y * torch.sigmoid(gf)
    else:
        raise ValueError(self.activation)
    y = y.to(x.dtype)
    return (y, res_out) if prenorm else y


# --------------------------------------------------------------------------------------------
# SwiGLU  --  fla/modules/activations/ops.py:541  z = x * sigmoid(x) * y ;  SwiGLULinear: z @ W^T + b (:682-683)
# --------------------------------------------------------------------------------------------
def swiglu_torch(x, y):
    xf = x.float()
    return (xf * torch.sigmoid(xf) * y.float()).to(x.dtype)


def swiglu_linear_torch(x, y, weight, bias):
    return F.linear(swiglu_torch(x, y), weight, bias)


# --------------------------------------------------------------------------------------------
# FusedCrossEntropyLoss (ignore_index=-100, label_smoothing=0, logit_scale=1, lse_square_scale=0;
# fla/modules/fused_cross_entropy/ops.py:462-468) == nn.CrossEntropyLoss
# --------------------------------------------------------------------------------------------
def _ce_loss(inplace_backward=True, reduction="mean", ignore_index=-100, **kwargs):
    return nn.CrossEntropyLoss(ignore_index=ignore_index, reduction=reduction)


def _apply():
    _gdn_layer.chunk_gated_delta_rule = chunk_gated_delta_rule_torch
    _gdn_layer.fused_recurrent_gated_delta_rule = fused_recurrent_gated_delta_rule_torch
    _gdn_layer.causal_conv1d = causal_conv1d_torch
    ShortConvolution.forward = short_conv_forward
    RMSNorm.forward = rmsnorm_forward
    FusedRMSNormGated.forward = rmsnorm_gated_forward
    _mlp.swiglu_linear = swiglu_linear_torch
    _mlp.swiglu = swiglu_torch
    _mu.FusedCrossEntropyLoss = _ce_loss

    # Fail loudly if any Triton kernel is still launched.
    try:
        from triton.runtime.jit import KernelInterface

        def _no_triton(self, grid):
            raise RuntimeError(f"Triton kernel launched on CPU path: {getattr(self, 'fn', self)}")
        KernelInterface.__getitem__ = _no_triton
    except Exception:  # pragma: no cover
        pass


_apply()


# --------------------------------------------------------------------------------------------
# Training-speed variant of fla's naive_chunk_gated_delta_rule (naive.py:67-161), identical math:
# the in-chunk forward substitution loop (naive.py:131-133), which builds
#     T = (I - N)^{-1},  N = -tril(diag(beta) K K^T * exp(G_i - G_j), -1)
# row by row, is replaced by one unit-lower-triangular solve (same result up to fp rounding, but
# autograd-friendly).  Used ONLY for training; all reference outputs use fla's naive code.
# --------------------------------------------------------------------------------------------
def fast_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=64, scale=None, initial_state=None,
                                output_final_state=False):
    from einops import rearrange
    BT = chunk_size
    if scale is None:
        scale = 1 / (q.shape[-1] ** 0.5)
    q, k, v, beta, g = map(lambda x: x.transpose(1, 2).contiguous().to(torch.float32), [q, k, v, beta, g])
    T = q.shape[-2]
    pad_len = (BT - (T % BT)) % BT
    if pad_len > 0:
        q = F.pad(q, (0, 0, 0, pad_len))
        k = F.pad(k, (0, 0, 0, pad_len))
        v = F.pad(v, (0, 0, 0, pad_len))
        beta = F.pad(beta, (0, pad_len))
        g = F.pad(g, (0, pad_len))
    b, h, l, d_k = q.shape
    d_v = v.shape[-1]
    q = q * scale
    v = v * beta[..., None]
    k_beta = k * beta[..., None]
    q, k, v, k_beta, decay = map(lambda x: rearrange(x, 'b h (n c) d -> b h n c d', c=BT),
                                 [q, k, v, k_beta, g.unsqueeze(-1)])
    decay = decay.squeeze(-1).cumsum(-1)
    decay_exp = decay.exp()[..., None]
    L_mask = ((decay.unsqueeze(-1) - decay.unsqueeze(-2)).tril().exp().float()).tril()
    strict = torch.tril(torch.ones(BT, BT, dtype=torch.bool, device=q.device), diagonal=-1)
    Nmat = -((k_beta @ k.transpose(-1, -2)) * L_mask) * strict
    eye = torch.eye(BT, dtype=torch.float32, device=q.device)
    attn = torch.linalg.solve_triangular(eye - Nmat, eye.expand_as(Nmat), upper=False, unitriangular=True)
    v = attn @ v
    k_cumdecay = attn @ (k_beta * decay_exp)
    S = k.new_zeros(b, h, d_k, d_v) if initial_state is None else initial_state.to(torch.float32)
    causal = torch.tril(torch.ones(BT, BT, dtype=torch.bool, device=q.device))
    outs = []
    for i in range(0, l // BT):
        q_i, k_i, v_i = q[:, :, i], k[:, :, i], v[:, :, i]
        a_i = q_i @ k_i.transpose(-1, -2) * L_mask[:, :, i] * causal
        v_new = v_i - k_cumdecay[:, :, i] @ S
        o_inter = (q_i * decay[:, :, i, :, None].exp()) @ S
        outs.append(o_inter + a_i @ v_new)
        S = S * decay[:, :, i, -1, None, None].exp() + \
            (k_i * (decay[:, :, i, -1, None] - decay[:, :, i]).exp()[..., None]).transpose(-1, -2) @ v_new
    o = torch.stack(outs, dim=2)
    o = rearrange(o, 'b h n c d -> b h (n c) d')[:, :, :T].transpose(1, 2)
    return o, (S if output_final_state else None)


def use_fast_training_chunk(enable: bool = True):
    """Switch the patched chunk op to fast_chunk_gated_delta_rule (training) or back to fla's naive."""
    global CHUNK_IMPL
    CHUNK_IMPL = "fast" if enable else "chunk"


_naive_chunk_ref = naive_chunk_gated_delta_rule


def _chunk_dispatch(*args, **kwargs):
    if CHUNK_IMPL == "fast":
        return fast_chunk_gated_delta_rule(*args, **kwargs)
    return _naive_chunk_ref(*args, **kwargs)


naive_chunk_gated_delta_rule = _chunk_dispatch  # used by chunk_gated_delta_rule_torch above
