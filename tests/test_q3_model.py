import pytest
import torch

import hw2.asr_model as m

TINY = dict(encoder_layers=1, hidden_dim=16, n_heads=2, feed_fwd_dim=32, max_text_len=12,
            n_mels=8)


def tiny(decoder, seed=0):
    torch.manual_seed(seed)
    return m.SpeechToText(decoder, **TINY).eval()


@pytest.mark.parametrize("decoder,total", [("lstm", 1_471_235), ("transformer", 1_329_835)])
def test_parameter_counts_of_the_handed_out_configuration(decoder, total):
    counts = m.SpeechToText(decoder).parameter_counts()
    assert counts["encoder"] == 812_800
    assert counts["total"] == total


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_parameter_counts_add_up_to_the_total(decoder):
    model = m.SpeechToText(decoder, statement_norm=True)
    counts = model.parameter_counts()
    assert counts["encoder"] + counts["decoder"] == counts["total"]
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["decoder"] == sum(p.numel() for n, p in model.named_parameters()
                                    if n.startswith("_dec."))


def test_parameter_names_are_the_handed_out_ones():
    """So a state_dict saved by the handed-out notebook loads (and the other way round)."""
    names = set(m.SpeechToText("transformer").state_dict())
    for name in ("_enc._embed._embed.0.weight", "_enc._embed._embed.2.weight",
                 "_enc._att_blocks.1._att._key.weight", "_enc._att_blocks.0._mlp.2.bias",
                 "_enc._out_norm.weight", "_enc._pos_embed", "_dec._pos_embed",
                 "_dec._att._att._query.bias", "_dec._cross_att._mlp_norm.weight",
                 "_dec._out_norm.bias", "_dec._classifier.weight"):
        assert name in names, name
    assert "_enc._att_blocks.0._att._key.bias" not in names  # keys have no bias
    lstm = set(m.SpeechToText("lstm").state_dict())
    assert {"_dec._rnn.weight_ih_l0", "_dec._rnn_norm.weight", "_dec._embed.weight"} <= lstm


def test_fused_attention_equals_the_recorded_softmax_path():
    """The fused kernel (training) and the explicit softmax (attention maps) agree, masks
    included: every attention layer of the model, on the inputs it gets in a padded batch."""
    torch.manual_seed(0)
    model = m.SpeechToText("transformer", hidden_dim=32, feed_fwd_dim=64, n_mels=8).eval()
    audio, lengths = torch.randn(3, 8, 40), torch.tensor([40, 25, 9])
    text = torch.randint(4, 35, (3, 12))
    calls = []
    hooks = [module.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((module, args, kwargs, out[0])),
        with_kwargs=True) for module in model.modules() if isinstance(module, m.MultiHeadAttention)]
    with torch.no_grad():
        model(audio, text, lengths)
    for hook in hooks:
        hook.remove()
    assert len(calls) == 4  # two encoder blocks, the decoder's self- and cross-attention
    for module, args, kwargs, fused in calls:
        with torch.no_grad():
            explicit, weights = module(*args, **{**kwargs, "need_weights": True})
        torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
        assert weights is not None
    with torch.no_grad():
        latent, padding = model.encode(audio, lengths)
        logits, _ = model.decode(text, latent, padding, return_attention=True)
        torch.testing.assert_close(model.decode(text, latent, padding), logits,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_returned_attention_weights_are_those_the_layer_applies(decoder):
    """decode(..., return_attention=True)'s cross-attention weights: softmax(q k^T) over the
    unpadded frames, computed by hand from the layer's inputs, and the weights that turn its
    values into its output."""
    model = tiny(decoder)
    latent, padding = model.encode(torch.rand(2, 8, 40), torch.tensor([40, 22]))
    tokens = torch.randint(0, 35, (2, 11))
    layer, seen = model._dec._cross_att._att, {}
    hook = layer.register_forward_hook(
        lambda module, args, kwargs, out: seen.update(x=args[0], out=out[0]), with_kwargs=True)
    with torch.no_grad():
        _, weights = model.decode(tokens, latent, padding, return_attention=True)
    hook.remove()
    heads, (b, _, e) = layer.n_heads, seen["x"].shape

    def split(x):  # (B, T, E) -> (B, heads, T, E / heads)
        return x.view(b, x.shape[1], heads, -1).transpose(1, 2)
    with torch.no_grad():
        q, k = split(layer._query(seen["x"])), split(layer._key(latent))
        scores = (q @ k.transpose(-1, -2)) / (e // heads) ** 0.5
        expected = scores.masked_fill(padding[:, None, None, :], float("-inf")).softmax(-1)
        output = layer._out((weights["cross"] @ split(layer._value(latent)))
                            .transpose(1, 2).flatten(2))
    torch.testing.assert_close(weights["cross"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output, seen["out"], rtol=1e-5, atol=1e-6)


def test_module_shapes():
    enc = m.AudioEncoderTransformer(1, 8, 50, 16, 2, 32)
    latent, padding = enc(torch.rand(3, 8, 41))
    assert latent.shape == (3, 21, 16) and padding is None
    _, padding = enc(torch.rand(3, 8, 41), torch.tensor([41, 30, 1]))
    assert padding.shape == (3, 21) and (~padding).sum(1).tolist() == [21, 15, 1]
    rnn = m.TextDecoderRecurrent(1, 35, 16, 2, 32)
    logits, (h, c) = rnn(torch.randint(0, 35, (3, 7)), latent)
    assert logits.shape == (3, 35, 7) and h.shape == c.shape == (1, 3, 16)
    att = m.TextDecoderTransformer(35, 12, 16, 2, 32)
    assert att(torch.randint(0, 35, (3, 11)), latent).shape == (3, 35, 11)
    assert att._pos_embed.shape == (11, 16) and att._mask.shape == (12, 12)
    assert m.sinusoids(5, 8)[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # sines, then cosines


def test_attention_decoder_is_causal():
    model = tiny("transformer")
    latent, _ = model._enc(torch.rand(2, 8, 30))
    tokens = torch.randint(0, 35, (2, 11))
    changed = tokens.clone()
    changed[:, 6:] = torch.randint(0, 35, (2, 5))
    a, b = model._dec(tokens, latent), model._dec(changed, latent)
    torch.testing.assert_close(a[:, :, :6], b[:, :, :6])
    assert not torch.allclose(a[:, :, 6:], b[:, :, 6:])


def test_lstm_stepped_with_its_state_equals_full_sequence():
    model = tiny("lstm")
    latent, _ = model._enc(torch.rand(2, 8, 30))
    tokens = torch.randint(0, 35, (2, 9))
    full, _ = model._dec(tokens, latent)
    state, steps = None, []
    for t in range(9):
        logits, state = model._dec(tokens[:, t:t + 1], latent, state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=2), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_cached_decoding_gives_the_same_tokens_and_logits(seed):
    model = tiny("transformer", seed)
    audio = torch.rand(3, 8, 40)
    assert torch.equal(model.generate(audio), model.generate(audio, use_cache=True))
    latent, _ = model._enc(audio)
    tokens = torch.randint(0, 35, (3, 11))
    cache, steps = {}, []
    for t in range(11):
        steps.append(model._dec(tokens[:, t:t + 1], latent, cache=cache, offset=t))
    torch.testing.assert_close(torch.cat(steps, dim=2), model._dec(tokens, latent),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_padded_batch_gives_the_same_outputs_as_each_clip_alone(decoder):
    model = tiny(decoder)
    lengths = [37, 20, 9]
    clips = [torch.rand(1, 8, n) for n in lengths]
    batch = torch.zeros(3, 8, 40)
    for i, clip in enumerate(clips):
        batch[i, :, :lengths[i]] = clip[0]
    tokens = torch.randint(0, 35, (3, 11))
    padded = model(batch, tokens, torch.tensor(lengths))
    for i, clip in enumerate(clips):
        alone = model(clip, tokens[i:i + 1])
        torch.testing.assert_close(padded[i:i + 1], alone, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.generate(batch, torch.tensor(lengths))[1:2],
                       model.generate(clips[1]))
    # without lengths the padding is attended, as in the handed-out code, and results change
    assert not torch.allclose(model(batch, tokens)[1:2], model(clips[1], tokens[1:2]))


def test_unknown_decoder_is_rejected():
    with pytest.raises(ValueError, match="unknown decoder"):
        m.SpeechToText("gru")


def test_statement_norm_adds_an_outer_layernorm_per_sub_block():
    plain, statement = m.SpeechToText("transformer"), m.SpeechToText("transformer",
                                                                       statement_norm=True)
    extra = sum(p.numel() for p in statement.parameters()) - \
        sum(p.numel() for p in plain.parameters())
    # encoder 2 blocks x 2 sub-blocks, decoder self-attention layer 1 + cross block 2: 7 x 400
    assert extra == 7 * 400
    block = m.ResidualAttentionBlock(16, 2, 32, statement_norm=True)
    out, _ = block(torch.randn(2, 5, 16) * 10 + 3)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_stopping_early_keeps_every_token_up_to_the_first_stop(decoder):
    model = tiny(decoder, seed=2)
    audio = torch.rand(3, 8, 40)
    full = model.generate(audio)
    # the stop token: one that every row emits, so that decoding can end before the last step
    stop = min(set.intersection(*(set(row[1:].tolist()) for row in full)))
    early = model.generate(audio, use_cache=True, stop_token=stop)
    assert early.shape == full.shape and not torch.equal(early, full)
    for row_full, row_early in zip(full, early):
        end = row_full[1:].tolist().index(stop) + 2
        assert torch.equal(row_early[:end], row_full[:end])
        assert (row_early[end:] == stop).all()


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_attention_maps_are_distributions_and_the_self_attention_is_causal(decoder):
    model = tiny(decoder)
    latent, padding = model.encode(torch.rand(2, 8, 40), torch.tensor([40, 22]))
    tokens = torch.randint(0, 35, (2, 11))
    with torch.no_grad():
        logits, maps = model.decode(tokens, latent, padding, return_attention=True)
    assert sorted(maps) == (["cross"] if decoder == "lstm" else ["cross", "self"])
    assert maps["cross"].shape == (2, 2, 11, 20)
    torch.testing.assert_close(maps["cross"].sum(-1), torch.ones(2, 2, 11))
    assert (maps["cross"][1, :, :, 11:] == 0).all()  # the second clip's padding gets nothing
    if decoder == "transformer":
        assert maps["self"].shape == (2, 2, 11, 11)
        assert (maps["self"].triu(1) == 0).all()
    with torch.no_grad():  # without the request: the fused path, the same logits, no weights
        torch.testing.assert_close(model.decode(tokens, latent, padding), logits,
                                   rtol=1e-5, atol=1e-5)
