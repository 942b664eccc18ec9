"""The fast form of SAM's mask decoder (two-way transformer, attention, output upscaling),
run by `napari_sam.model.transformer` and `mask_decoder` inside an `InferenceSession`.

It computes what the modules' plain forms compute (`tests/test_speed_paths.py`,
`tests/test_predictor.py` and `tests/test_parity.py` compare them), with these changes:

- one image's tokens (1, hw, C) are shared by all B prompts until the first block mixes the
  prompts in: the image-side projections of the first block run once, not B times, and
  are kept by the session for the image last prompted (`image_key`), so a second click on
  the same embedding skips them;
- the image tokens and their positional encoding are cast to the autocast dtype once;
  under bf16 the projections that read them run as one oneDNN matmul with the positional
  terms from a kept table (`kernels.stacked_projections`);
- between the image (thousands of tokens) and the prompt tokens (a handful), attention
  treats the heads as one block-diagonal matrix of the few tokens (`attend_projected`);
- the output upscaling (two 2x2 stride-2 transposed convolutions) runs as two linear layers
  on the token-major keys (`upscale_masks`).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from .kernels import caching, derived, linear, matmul_input, stacked_projections
from .session import version


class _ImageKey:
    """Identifies one image embedding (the tensor object itself, via a weak reference, and
    its version) together with everything the decoder's first block computes from it: the
    no-mask embedding, the positional encoding, the first block's weights and the autocast
    dtype. Equal keys mean the kept first-block projections are still valid."""

    def __init__(self, embeddings: torch.Tensor, model) -> None:
        self.ref = weakref.ref(embeddings)
        pe = model.prompt_encoder
        dev = embeddings.device.type
        self.state = (
            version(embeddings), embeddings.data_ptr(), tuple(embeddings.shape),
            embeddings.dtype, str(embeddings.device),
            torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev),
            tuple((version(p), p.data_ptr()) for p in (
                pe.no_mask_embed.weight, pe.pe_layer.positional_encoding_gaussian_matrix,
                *model.mask_decoder.transformer.layers[0].parameters())))

    def __eq__(self, other) -> bool:
        if not isinstance(other, _ImageKey):
            return False
        a = self.ref()
        return a is not None and a is other.ref() and self.state == other.state

    __hash__ = None


def image_key(embeddings: torch.Tensor, model):
    """The key under which the session keeps the first block's work on `embeddings` (1, C,
    g, g) for `model` (a `Sam`), or None where nothing may be kept (no session, autograd,
    inference tensors, which have no version counter to see in-place changes).

    Parameters
    ----------
    embeddings : Tensor, (1, C, g, g)
    model : Sam

    Returns
    -------
    _ImageKey or None
        Compared with ==; never hashed.
    """
    if caching() is None or embeddings.is_inference() or embeddings.shape[0] != 1:
        return None
    return _ImageKey(embeddings, model)


# ---- attention ---------------------------------------------------------------------------

def _like(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`p` ready to multiply `v`: as it is under autocast (the matmul casts both), else in
    `v`'s dtype."""
    if p.dtype == v.dtype or torch.is_autocast_enabled(p.device.type):
        return p
    return p.to(v.dtype)


def _block_diag(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, n, h*d) -> (B, h*n, h*d): row block i holds head i's slice of x, zeros elsewhere."""
    b, n, c = x.shape
    out = x.new_zeros(b, h, n, h, c // h)
    out.diagonal(0, 1, 3).copy_(x.view(b, n, h, c // h).permute(0, 1, 3, 2))
    return out.view(b, h * n, c)


def _diagonal_blocks(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, h*n, h*d) -> (B, n, h*d): for each head i, row block i's column block i."""
    b, hn, c = x.shape
    n = hn // h
    return x.view(b, h, n, h, c // h).diagonal(0, 1, 3).permute(0, 1, 3, 2).reshape(b, n, c)


def attend_projected(attn, qp: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor,
                     residual: torch.Tensor | None = None) -> torch.Tensor:
    """`attn` (a decoder `Attention`) on projected queries (Bq, nq, C') over projected keys
    and values (Bk, nk, C'), then its output projection (plus `residual`, fused into it where
    possible). Bq and Bk are B or 1 (one image's tokens shared by B prompts, never copied).

    Between the image (thousands of tokens) and the prompt tokens (a handful) the heads are
    one block-diagonal matrix of the few tokens: each product is then a single matmul with
    the image tokens in their natural (n, C') layout, where splitting heads would copy every
    image-side tensor, and softmax runs over rows or a second-last axis that vectorise.

    Parameters
    ----------
    attn : Attention
    qp : Tensor, (Bq, nq, C')
    kp, vp : Tensor, (Bk, nk, C')
    residual : Tensor, (1 or B, nq, C), optional

    Returns
    -------
    Tensor, (B, nq, C)
    """
    h = attn.num_heads
    b = max(qp.shape[0], kp.shape[0])
    nq, nk, c = qp.shape[1], kp.shape[1], qp.shape[2]
    scale = (c // h) ** -0.5
    if nk <= 32 < nq:  # image tokens attending to the prompt tokens
        kb = _block_diag(kp * scale, h)  # (B, h*nk, C')
        vb = _block_diag(vp, h)
        if qp.shape[0] == 1:  # x @ W.T natively: no transposed copy of the image side
            s = F.linear(kb, qp[0])
        else:
            s = kb @ qp.transpose(-2, -1)
        p = torch.softmax(s.view(b, h, nk, nq), dim=-2).view(b, h * nk, nq)
        out = _like(p, vb).transpose(-2, -1) @ vb  # (B, nq, C'), token-major
    elif nq <= 32 < nk:  # prompt tokens attending to the image
        qb = _block_diag(qp * scale, h)  # (B, h*nq, C')
        if kp.shape[0] == 1:
            p = torch.softmax(F.linear(qb, kp[0]), dim=-1)
            ob = _like(p, vp) @ vp[0]
        else:
            p = torch.softmax(qb @ kp.transpose(-2, -1), dim=-1)
            ob = _like(p, vp) @ vp
        out = _diagonal_blocks(ob, h)  # (B, nq, C')
    else:  # among the prompt tokens: a few rows, fp32 (see `kernels.linear`)
        q, k, v = (attn._heads(t.expand(b, -1, -1).float()) for t in (qp, kp, vp))
        with torch.autocast(q.device.type, enabled=False):
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, nq, c)
    return linear(out, attn.out_proj, residual=residual)


def attention(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attn(q, k, v)` in the fast form.

    Parameters
    ----------
    attn : Attention
        A decoder attention module.
    q : Tensor, (Bq, nq, C)
    k, v : Tensor, (Bk, nk, C)

    Returns
    -------
    Tensor, (B, nq, C)
    """
    return attend_projected(attn, linear(q, attn.q_proj), linear(k, attn.k_proj),
                            linear(v, attn.v_proj))


# ---- the two-way transformer --------------------------------------------------------------



def image_side(block, keys: torch.Tensor, key_pe: torch.Tensor,
               image_pe: torch.Tensor | None = None) -> tuple:
    """The projections of `block` (a `TwoWayBlock`) that read only the image tokens: keys
    and values of token->image, queries of image->token, at the batch size of `keys`.
    keys + key_pe feeds two of them: computed and cast once; with `image_pe` (the fp32
    (1, C, h, w) encoding key_pe comes from) all three may run as one matmul.

    Parameters
    ----------
    block : TwoWayBlock
    keys, key_pe : Tensor, (1 or B, hw, C)
    image_pe : Tensor, (1, C, h, w) float32, optional

    Returns
    -------
    tuple of Tensor, (1 or B, hw, C')
        (token->image keys, token->image values, image->token queries).
    """
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    fused = stacked_projections(block, keys, image_pe, (t2i.k_proj, i2t.q_proj), (t2i.v_proj,))
    if fused is not None:
        return fused[0], fused[2], fused[1]
    k, kv = matmul_input(keys + key_pe), matmul_input(keys)
    return linear(k, t2i.k_proj), linear(kv, t2i.v_proj), linear(k, i2t.q_proj)


def block_forward(block, queries, keys, query_pe, key_pe, first: tuple | None = None,
                  image_pe: torch.Tensor | None = None):
    """`block(queries, keys, query_pe, key_pe)` in the fast form; keys (1 or B, hw, C);
    `first`: its `image_side` computed before.

    Parameters
    ----------
    block : TwoWayBlock
    queries, query_pe : Tensor, (B, n, C)
    keys, key_pe : Tensor, (1 or B, hw, C)
    first : tuple of Tensor, optional
    image_pe : Tensor, (1, C, h, w) float32, optional

    Returns
    -------
    queries : Tensor, (B, n, C)
    keys : Tensor, (B, hw, C)
    """
    if block.skip_first_pe:
        queries = attention(block.self_attn, queries, queries, queries)
    else:
        q = queries + query_pe
        queries = queries + attention(block.self_attn, q, q, queries)
    queries = block.norm1(queries)
    k_t2i, v_t2i, q_i2t = first if first is not None else image_side(block, keys, key_pe,
                                                                     image_pe)
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    q = linear(queries + query_pe, t2i.q_proj)
    queries = block.norm2(queries + attend_projected(t2i, q, k_t2i, v_t2i))
    queries = block.norm3(queries + block.mlp(queries))
    q = queries + query_pe
    # keys + attention: a shared (1, hw, C) keys broadcasts to (B, hw, C)
    keys = block.norm4(attend_projected(i2t, q_i2t, linear(q, i2t.k_proj),
                                        linear(queries, i2t.v_proj), residual=keys))
    return queries, keys


def first_block_kept(cache_key) -> bool:
    """True when `transformer_forward` with this key will reuse the session's kept image
    tokens (then its `image` may be None).

    Parameters
    ----------
    cache_key : _ImageKey or None
        From `image_key`.

    Returns
    -------
    bool
    """
    s = caching()
    return (cache_key is not None and s is not None
            and s.image_cache("first_block", cache_key) is not None)


def transformer_forward(tr, image: torch.Tensor | None, image_pe: torch.Tensor,
                        tokens: torch.Tensor, cache_key=None):
    """`tr(image, image_pe, tokens)` (a `TwoWayTransformer`) in the fast form: image (1 or
    B, C, h, w); with `cache_key` (see `image_key`) the first block's image-side work is
    kept by the session for the image and reused by later calls with the same key.

    Parameters
    ----------
    tr : TwoWayTransformer
    image : Tensor, (1 or B, C, h, w), or None
        None only when `first_block_kept(cache_key)`.
    image_pe : Tensor, (1, C, h, w)
    tokens : Tensor, (B, n, C)
    cache_key : _ImageKey, optional

    Returns
    -------
    queries : Tensor, (B, n, C)
    keys : Tensor, (B, hw, C)
    """
    s = caching() if cache_key is not None else None
    hit = None if s is None else s.image_cache("first_block", cache_key)
    first = None
    if hit is not None:
        keys, key_pe, first = hit
    else:
        # token-major (B, hw, C), cast once: the image tokens and their encoding are the
        # decoder's big tensors; in bf16 every add, norm and projection moves half the bytes
        keys = matmul_input(image.flatten(2).transpose(1, 2).contiguous())
        key_pe = matmul_input(image_pe.flatten(2).transpose(1, 2).contiguous())
        if s is not None:
            first = image_side(tr.layers[0], keys, key_pe, image_pe)
            s.image_cache("first_block", cache_key, lambda: (keys, key_pe, first))
    queries = tokens
    for i, layer in enumerate(tr.layers):
        queries, keys = block_forward(layer, queries, keys, tokens, key_pe,
                                      first if i == 0 else None, image_pe)
    if keys.shape[0] != queries.shape[0]:  # no blocks
        keys = keys.expand(queries.shape[0], -1, -1)
    final = tr.final_attn_token_to_image
    kv = stacked_projections(tr, keys, image_pe, (final.k_proj,), (final.v_proj,))
    if kv is None:
        attn = attention(final, queries + tokens, matmul_input(keys + key_pe), matmul_input(keys))
    else:
        attn = attend_projected(final, linear(queries + tokens, final.q_proj), *kv)
    return tr.norm_final_attn(queries + attn), keys


# ---- the mask decoder's output upscaling ----------------------------------------------------

class _Linear:
    """Weight and bias of a linear layer derived from other parameters (for `linear`)."""

    def __init__(self, weight: torch.Tensor, bias) -> None:
        self.weight, self.bias = weight, bias


def upscaling_is_plain(seq) -> bool:
    """True for SAM's `output_upscaling`: two 2x2 stride-2 transposed convolutions,
    LayerNorm2d and GELU between them, GELU after (what `upscale_masks` computes).

    Parameters
    ----------
    seq : nn.Sequential

    Returns
    -------
    bool
    """
    return (len(seq) == 5 and type(seq[1]).__name__ == "LayerNorm2d"
            and all(isinstance(seq[i], torch.nn.ConvTranspose2d)
                    and seq[i].kernel_size == (2, 2) and seq[i].stride == (2, 2)
                    and seq[i].padding == (0, 0) and seq[i].groups == 1 for i in (0, 3))
            and all(isinstance(seq[i], torch.nn.GELU) and seq[i].approximate == "none"
                    for i in (2, 4)))


def _conv_as_linear(conv) -> _Linear:
    """A 2x2 stride-2 transposed conv as a linear layer C -> (2, 2, C'), kept by the
    session."""
    wt, bs = conv.weight, conv.bias  # (C, C', 2, 2), (C',)

    def make():
        weight = wt.permute(2, 3, 1, 0).reshape(-1, wt.shape[0])  # (4 C', C)
        return _Linear(weight, None if bs is None else bs.repeat(4))

    return derived(conv, "as_linear", make, wt, bs)


def upscale_masks(seq, keys: torch.Tensor, h: int, w: int, hyper: torch.Tensor) -> torch.Tensor:
    """`seq` (an `output_upscaling` for which `upscaling_is_plain`) on the token-major
    (B, hw, C) keys, then the hypernetwork product with hyper (B, K, C''): (B, K, 4h, 4w).

    A 2x2 stride-2 transposed convolution maps each input pixel to its own 2x2 block: a
    linear layer C -> 4 C' per pixel. So both run as linear layers (GELU fused into the
    second) on pixels kept in (B, h, w, 2, 2, 2, 2, C') order, the norm is a LayerNorm over
    the last axis, the product reduces C'' to the K mask channels per pixel, and only those
    K channels are shuffled to (B, K, 4h, 4w).

    Parameters
    ----------
    seq : nn.Sequential
    keys : Tensor, (B, hw, C)
    h, w : int
        The token grid.
    hyper : Tensor, (B, K, C'')

    Returns
    -------
    Tensor, (B, K, 4h, 4w)
    """
    b = keys.shape[0]
    c1, c2 = seq[0].out_channels, seq[3].out_channels
    x = linear(keys, _conv_as_linear(seq[0])).view(b, h, w, 2, 2, c1)
    x = F.gelu(F.layer_norm(x, (c1,), seq[1].weight, seq[1].bias, seq[1].eps))
    x = linear(x, _conv_as_linear(seq[3]), "gelu")  # (b, h, w, 2, 2, 4 * c2)
    k = hyper.shape[1]
    m = x.reshape(b, -1, c2) @ hyper.transpose(1, 2).to(x.dtype)  # (b, h*w*16, K)
    # pixels (h, w, a, b', c, d) -> rows 4h + 2a + c, columns 4w + 2b' + d: first into
    # raster order with K innermost, then K to the front (a plain transpose); 2.5 x faster
    # than one 8-dimensional permute
    m = m.view(b, h, w, 2, 2, 2, 2, k).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, k)
    return m.transpose(1, 2).reshape(b, k, 4 * h, 4 * w)
