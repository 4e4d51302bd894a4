"""Key acceptance test: streaming with per-layer, per-head eviction == one masked full forward.

What it proves: the session's block prefill, the adapter's position rule, the fixed store and the
compaction together compute exactly what the model computes over the whole token sequence when every
query token q attends to key k iff k <= q and k had not been evicted (in that layer and KV head) when q was
prefilled. The oracle runs the real model once, without a cache, through a custom attention function
registered with transformers' AttentionInterface that applies that time-dependent mask (KV-head masks
expanded to the query heads for GQA).
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface, DynamicCache

from infinipot.session import SessionConfig, StreamingSession

ORACLE_NAME = "infinipot_eviction_oracle"
_ORACLE_MASKS: dict[int, torch.Tensor] = {}  # layer -> (kv_heads, N, N) bool, set by the test


def _oracle_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Plain softmax attention with the per-layer, per-KV-head mask of `_ORACLE_MASKS`."""
    allowed = _ORACLE_MASKS[module.layer_idx]
    n_rep = query.shape[1] // key.shape[1]
    allowed = allowed.repeat_interleave(n_rep, dim=0).unsqueeze(0)  # (1, Hq, N, N)
    key = key.repeat_interleave(n_rep, dim=1)
    value = value.repeat_interleave(n_rep, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query.double() @ key.double().transpose(-1, -2)) * scale
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    out = (weights @ value.double()).to(query.dtype)
    return out.transpose(1, 2).contiguous(), weights.to(query.dtype)


AttentionInterface.register(ORACLE_NAME, _oracle_attention)


def _text_config(model):
    config = model.config
    return getattr(config, "text_config", config)


def _record_forwards(adapter, calls: list[dict]):
    """Wrap adapter.forward to record, per call: inputs, which tokens each layer/head held before it, the
    token ids it wrote and its logits. Returns the original bound method (to restore)."""
    original = adapter.forward

    def spy(embeds, position_ids, cache, logits_to_keep=0, **extra):
        held = [cache.token_index[layer, :, : cache.layer_length(layer)].clone() for layer in range(cache.num_layers)]
        before = cache.length
        logits = original(embeds, position_ids, cache, logits_to_keep=logits_to_keep, **extra)
        calls.append(
            {
                "embeds": embeds.detach().clone().reshape(-1, embeds.shape[-1]),
                "positions": position_ids.detach().clone(),
                "held": held,
                "new": cache.token_index[0, 0, before : cache.length].clone(),
                "logits": logits.detach().clone(),
                "extra": extra,  # e.g. Qwen3-VL's DeepStack features of a visual block
            }
        )
        return logits

    adapter.forward = spy
    return original


def _joined_extra(calls: list[dict]) -> dict:
    """The per-block forward extras joined over the whole sequence (DeepStack: the visual-position mask over
    all tokens, each layer's features of all visual tokens in order); {} for adapters without extras."""
    if not any(c["extra"] for c in calls):
        return {}
    masks = [c["extra"].get("visual_pos_masks", torch.zeros((1, c["new"].numel()), dtype=torch.bool)) for c in calls]
    with_features = [c["extra"]["deepstack_visual_embeds"] for c in calls if c["extra"]]
    layers = len(with_features[0])
    return {
        "visual_pos_masks": torch.cat(masks, dim=1),
        "deepstack_visual_embeds": [torch.cat([f[i] for f in with_features]) for i in range(layers)],
    }


def _masks(calls: list[dict], num_layers: int, num_heads: int) -> dict[int, torch.Tensor]:
    total = sum(int(c["new"].numel()) for c in calls)
    masks = {layer: torch.zeros(num_heads, total, total, dtype=torch.bool) for layer in range(num_layers)}
    offset = 0
    for call in calls:
        n = int(call["new"].numel())
        assert call["new"].tolist() == list(range(offset, offset + n)), "token ids must follow stream order"
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
        for layer in range(num_layers):
            for head in range(num_heads):
                masks[layer][head, offset : offset + n, call["held"][layer][head]] = True
                masks[layer][head, offset : offset + n, offset : offset + n] = causal
        offset += n
    return masks


def test_streamed_answer_logits_equal_masked_full_forward(adapter, make_frames):
    prefix_len = len(adapter.prefix_token_ids())
    per_frame = adapter.tokens_per_frame + adapter.max_frame_text_tokens  # frame text counts against the budget
    budget = prefix_len + 6 * per_frame
    calls: list[dict] = []
    original = _record_forwards(adapter, calls)
    try:
        session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=budget, max_new_tokens=3))
        compressions: list[torch.Tensor] = []
        session.add_compression_listener(lambda s, report: compressions.append(s.store.token_index.clone()))
        for i, frame in enumerate(make_frames(adapter.frames_per_step * 16, seed=7)):
            session.add_frame(frame, stamp=0.25 * i)
        streamed_calls = len(calls)
        session.ask("what colour was the first cube?", max_new_tokens=3)
    finally:
        del adapter.forward  # drop the instance attribute: the class method is back
        assert adapter.forward == original
    assert len(compressions) >= 3, "the budget must force several compressions"
    store = session.store
    length = store.length
    per_head_differs = any(
        not torch.equal(store.token_index[layer, 0, :length], store.token_index[layer, h, :length])
        for layer in range(store.num_layers)
        for h in range(1, store.num_kv_heads)
    )
    assert per_head_differs, "eviction must differ between KV heads for this test to mean something"

    used = calls[: streamed_calls + 1]  # prefix, every visual block, the question (first answer step)
    geometry = adapter.geometry
    _ORACLE_MASKS.clear()
    _ORACLE_MASKS.update(_masks(used, geometry.num_layers, geometry.num_kv_heads))
    embeds = torch.cat([c["embeds"] for c in used])
    positions = torch.cat([c["positions"] for c in used], dim=-1)

    text_config = _text_config(adapter.model)
    saved_impl = text_config._attn_implementation
    text_config._attn_implementation = ORACLE_NAME
    try:
        full = adapter.forward(embeds, positions, DynamicCache(), logits_to_keep=1, **_joined_extra(used))
    finally:
        text_config._attn_implementation = saved_impl
        _ORACLE_MASKS.clear()
    streamed = used[-1]["logits"][0, -1]
    assert full.shape[-1] == streamed.shape[-1]
    difference = (full[0, -1].double() - streamed.double()).abs().max().item()
    print(f"max |delta logit| = {difference:.2e}")
    assert difference <= 1e-4, f"streamed vs masked full forward differ by {difference}"
    # and the oracle is sensitive: without eviction masks (plain causal) the logits differ
    causal = torch.tril(torch.ones(embeds.shape[0], embeds.shape[0], dtype=torch.bool))
    _ORACLE_MASKS.update({layer: causal.expand(geometry.num_kv_heads, -1, -1) for layer in range(geometry.num_layers)})
    text_config._attn_implementation = ORACLE_NAME
    try:
        unevicted = adapter.forward(embeds, positions, DynamicCache(), logits_to_keep=1, **_joined_extra(used))
    finally:
        text_config._attn_implementation = saved_impl
        _ORACLE_MASKS.clear()
    assert (unevicted[0, -1] - streamed).abs().max().item() > 1e-3
