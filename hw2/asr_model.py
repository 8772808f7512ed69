"""Question 3 models: the handed-out transformer audio encoder and the two text decoders.

Layer names and shapes are the handed-out notebook's (Whisper-style attention, q and k each
scaled by d^-1/4, no key bias, pre-norm blocks), so its checkpoints load. Additions, off by
default: key-padding masks (a padded clip's outputs equal the clip's alone), a key/value cache
for greedy decoding, and the decoder's attention weights on request.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# The handed-out config pads every clip to 2754 log-mel frames (audio_time); the embedding's
# stride-2 convolution halves them, so the encoder's positions number 1377.
ENCODER_TIME = 2754 // 2

Tensor = torch.Tensor


def sinusoids(length: int, channels: int, max_timescale: float = 3000) -> Tensor:
    """Fixed positions (length, channels): all sines, then all cosines (handed-out / Whisper)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class MultiHeadAttention(nn.Module):
    def __init__(self, hidden_dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self._query = nn.Linear(hidden_dim, hidden_dim)
        self._key = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self._value = nn.Linear(hidden_dim, hidden_dim)
        self._out = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: Tensor, xa: Tensor | None = None, mask: Tensor | None = None,
                key_padding: Tensor | None = None, cache: dict | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x (B, Tq, E) attends to xa (B, Tk, E) or to itself: (output (B, Tq, E), weights
        (B, heads, Tq, Tk) if need_weights else None), as whisper returns qk. mask: additive
        causal (T, T); key_padding: (B, Tk) True at padding; cache: a dict this layer fills
        with its keys and values (self-attention: appended; cross-attention: computed once)."""
        q = self._query(x)
        if cache is not None and xa is not None and self in cache:
            k, v = cache[self]  # cross-attention: the encoder's keys and values never change
        else:
            source = x if xa is None else xa
            k, v = self._key(source), self._value(source)
            if cache is not None:
                if xa is None and self in cache:
                    k = torch.cat([cache[self][0], k], dim=1)
                    v = torch.cat([cache[self][1], v], dim=1)
                cache[self] = (k, v)
        offset = k.shape[1] - q.shape[1] if xa is None else 0  # queries' first position
        out, weights = self._attention(q, k, v, mask, key_padding, offset, need_weights)
        return self._out(out), weights

    def _attention(self, q, k, v, mask, key_padding, offset, need_weights
                   ) -> tuple[Tensor, Tensor | None]:
        """Softmax(q k^T) v per head, q and k each scaled by d^-1/4 as handed out. The fused
        scaled_dot_product_attention kernel (no (T, T) scores kept for the backward pass)
        unless the weights are asked for: then an explicit softmax that returns them."""
        b, t_q, e = q.shape
        scale = (e // self.n_heads) ** -0.25
        q = q.view(b, t_q, self.n_heads, -1).transpose(1, 2) * scale
        k = k.view(b, k.shape[1], self.n_heads, -1).transpose(1, 2) * scale
        v = v.view(b, v.shape[1], self.n_heads, -1).transpose(1, 2)
        bias = None  # additive (.., Tq, Tk): the causal mask and the key padding
        if mask is not None:
            bias = mask[offset:offset + t_q, :k.shape[2]].to(q.dtype)
        if key_padding is not None:
            padding = torch.zeros(key_padding.shape, dtype=q.dtype, device=q.device)
            padding = padding.masked_fill(key_padding, float("-inf"))[:, None, None, :]
            bias = padding if bias is None else bias + padding
        weights = None
        if not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        else:
            scores = q @ k.transpose(-1, -2)
            if bias is not None:
                scores = scores + bias
            weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
            out = weights @ v
        return out.transpose(1, 2).flatten(start_dim=2), weights


def _outer_norm(hidden_dim: int, statement: bool) -> nn.Module:
    """The statement's sub-block is LN(x + Module(LN(x))); the handed-out code has no outer LN."""
    return nn.LayerNorm(hidden_dim) if statement else nn.Identity()


class ResidualAttentionBlock(nn.Module):
    """x + Att(LN(x), cross_x), then x + MLP(LN(x)) (pre-norm, no outer LayerNorm, as handed
    out; `statement_norm` wraps each sum in a LayerNorm, as the statement's appendix writes)."""

    def __init__(self, hidden_dim: int, n_heads: int, feed_fwd_dim: int,
                 statement_norm: bool = False):
        super().__init__()
        self._att_norm = nn.LayerNorm(hidden_dim)
        self._att = MultiHeadAttention(hidden_dim, n_heads)
        self._mlp_norm = nn.LayerNorm(hidden_dim)
        self._mlp = nn.Sequential(nn.Linear(hidden_dim, feed_fwd_dim), nn.GELU(),
                                  nn.Linear(feed_fwd_dim, hidden_dim))
        self._att_out_norm = _outer_norm(hidden_dim, statement_norm)
        self._mlp_out_norm = _outer_norm(hidden_dim, statement_norm)

    def forward(self, x: Tensor, cross_x: Tensor | None = None,
                key_padding: Tensor | None = None, cache: dict | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """(B, T, E) -> (B, T, E) and the attention weights (see MultiHeadAttention)."""
        h, weights = self._att(self._att_norm(x), cross_x, key_padding=key_padding, cache=cache,
                               need_weights=need_weights)
        x = self._att_out_norm(x + h)
        return self._mlp_out_norm(x + self._mlp(self._mlp_norm(x))), weights


class ResidualAttentionLayer(nn.Module):
    """x + Att(LN(x), mask): the decoder's causal self-attention, no MLP."""

    def __init__(self, hidden_dim: int, n_heads: int, feed_fwd_dim: int | None = None,
                 statement_norm: bool = False):
        super().__init__()
        self._att_norm = nn.LayerNorm(hidden_dim)
        self._att = MultiHeadAttention(hidden_dim, n_heads)
        self._out_norm = _outer_norm(hidden_dim, statement_norm)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: dict | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        h, weights = self._att(self._att_norm(x), mask=mask, cache=cache,
                               need_weights=need_weights)
        return self._out_norm(x + h), weights


class SpeechEmbedding(nn.Module):
    """Two 1-D convolutions over time (the second with stride 2), each followed by GELU, in one
    `_embed` Sequential as handed out, so handed-out checkpoints load."""

    def __init__(self, freq_dim: int, hidden_dim: int):
        super().__init__()
        self._embed = nn.Sequential(
            nn.Conv1d(freq_dim, hidden_dim, kernel_size=3, padding=1), nn.GELU(),
            nn.Conv1d(hidden_dim, hidden_dim, kernel_size=3, stride=2, padding=1), nn.GELU())

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """(B, F, T) -> (B, ceil(T/2), E). With frame_mask (B, T) the first convolution's
        outputs past a clip's end are zeroed, as the second convolution's zero padding would
        see them for the clip alone."""
        conv1, gelu1, conv2, gelu2 = self._embed
        h = gelu1(conv1(x))
        if frame_mask is not None:
            h = h * frame_mask[:, None, :]
        return gelu2(conv2(h)).permute(0, 2, 1)


class AudioEncoderTransformer(nn.Module):
    def __init__(self, n_layers: int = 2, freq_dim: int = 80, time_dim: int = ENCODER_TIME,
                 hidden_dim: int = 200, n_heads: int = 2, feed_fwd_dim: int = 400,
                 statement_norm: bool = False, **kwargs):
        super().__init__()
        self._embed = SpeechEmbedding(freq_dim, hidden_dim)
        self.register_buffer("_pos_embed", sinusoids(time_dim, hidden_dim))
        self._att_blocks = nn.ModuleList(
            ResidualAttentionBlock(hidden_dim, n_heads, feed_fwd_dim, statement_norm)
            for _ in range(n_layers))
        self._out_norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Log-mel (B, 80, T) -> (B, ceil(T/2), 200) and the key-padding mask of the output
        (None without lengths: every position is attended, as handed out)."""
        frame_mask = key_padding = None
        if lengths is not None:
            frame_mask = (torch.arange(x.shape[-1], device=x.device) < lengths[:, None]).to(x.dtype)
        h = self._embed(x, frame_mask)
        h = h + self._pos_embed[:h.shape[1]]
        if lengths is not None:
            key_padding = torch.arange(h.shape[1], device=x.device) >= \
                ((lengths + 1) // 2)[:, None]
        for block in self._att_blocks:
            h, _ = block(h, key_padding=key_padding)
        return self._out_norm(h), key_padding


class TextDecoderRecurrent(nn.Module):
    """Q3.1: embedding -> LayerNorm -> LSTM -> residual cross-attention block over the audio
    -> LayerNorm -> linear to the vocabulary."""

    def __init__(self, n_layers: int = 1, freq_dim: int = 35, hidden_dim: int = 200,
                 n_heads: int = 2, feed_fwd_dim: int = 400, statement_norm: bool = False,
                 **kwargs):
        super().__init__()
        self._embed = nn.Embedding(freq_dim, hidden_dim)
        self._rnn_norm = nn.LayerNorm(hidden_dim)
        self._rnn = nn.LSTM(hidden_dim, hidden_dim, num_layers=n_layers, batch_first=True)
        self._cross_att = ResidualAttentionBlock(hidden_dim, n_heads, feed_fwd_dim,
                                                 statement_norm)
        self._out_norm = nn.LayerNorm(hidden_dim)
        self._classifier = nn.Linear(hidden_dim, freq_dim)

    def forward(self, x: Tensor, latent: Tensor, state=None, latent_padding=None,
                cache: dict | None = None, weights: dict | None = None):
        """Tokens (B, T) -> logits (B, 35, T) and the LSTM state (h, c). Feeding a sequence one
        token at a time with the returned state gives the same logits as feeding it whole.
        A `weights` dict receives the cross-attention weights (B, heads, T, frames) as 'cross'."""
        h, state = self._rnn(self._rnn_norm(self._embed(x)), state)
        h, cross = self._cross_att(h, latent, key_padding=latent_padding, cache=cache,
                                   need_weights=weights is not None)
        if weights is not None:
            weights["cross"] = cross
        return self._classifier(self._out_norm(h)).permute(0, 2, 1), state


class TextDecoderTransformer(nn.Module):
    """Q3.2: embedding + learned positions -> residual causal self-attention -> residual
    cross-attention block over the audio -> LayerNorm -> linear to the vocabulary."""

    def __init__(self, freq_dim: int = 35, time_dim: int = 99, hidden_dim: int = 200,
                 n_heads: int = 2, feed_fwd_dim: int = 400, statement_norm: bool = False,
                 **kwargs):
        super().__init__()
        self._embed = nn.Embedding(freq_dim, hidden_dim)
        self._pos_embed = nn.Parameter(torch.rand(time_dim - 1, hidden_dim))
        self._att = ResidualAttentionLayer(hidden_dim, n_heads, feed_fwd_dim, statement_norm)
        self._cross_att = ResidualAttentionBlock(hidden_dim, n_heads, feed_fwd_dim,
                                                 statement_norm)
        self._out_norm = nn.LayerNorm(hidden_dim)
        self._classifier = nn.Linear(hidden_dim, freq_dim)
        mask = torch.full((time_dim, time_dim), float("-inf")).triu(1)
        self.register_buffer("_mask", mask, persistent=False)

    def forward(self, x: Tensor, latent: Tensor, latent_padding=None,
                cache: dict | None = None, offset: int = 0, weights: dict | None = None
                ) -> Tensor:
        """Tokens (B, T) at positions offset.. -> logits (B, 35, T). Position t sees tokens
        0..t only. With a cache, only the new tokens are passed (offset = tokens already seen).
        A `weights` dict receives 'self' (B, heads, T, T) and 'cross' (B, heads, T, frames)."""
        need = weights is not None
        h = self._embed(x) + self._pos_embed[offset:offset + x.shape[1]]
        h, own = self._att(h, mask=self._mask, cache=cache, need_weights=need)
        h, cross = self._cross_att(h, latent, key_padding=latent_padding, cache=cache,
                                   need_weights=need)
        if need:
            weights.update({"self": own, "cross": cross})
        return self._classifier(self._out_norm(h)).permute(0, 2, 1)


class SpeechToText(nn.Module):
    """The encoder and one decoder ("lstm": Q3.1, "transformer": Q3.2), with the handed-out
    sizes by default: log-mel audio (B, 80, T) and tokens in, logits over 35 symbols out."""

    def __init__(self, decoder: str = "transformer", max_text_len: int = 99,
                 encoder_layers: int = 2, hidden_dim: int = 200, n_heads: int = 2,
                 feed_fwd_dim: int = 400, n_vocab: int = 35, n_mels: int = 80,
                 statement_norm: bool = False):
        super().__init__()
        self.max_text_len, self.decoder_type = max_text_len, decoder
        self._enc = AudioEncoderTransformer(encoder_layers, n_mels, ENCODER_TIME, hidden_dim,
                                            n_heads, feed_fwd_dim, statement_norm)
        kwargs = dict(freq_dim=n_vocab, time_dim=max_text_len, hidden_dim=hidden_dim,
                      n_heads=n_heads, feed_fwd_dim=feed_fwd_dim, statement_norm=statement_norm)
        if decoder == "lstm":
            self._dec = TextDecoderRecurrent(n_layers=1, **kwargs)
        elif decoder == "transformer":
            self._dec = TextDecoderTransformer(**kwargs)
        else:
            raise ValueError(f"unknown decoder {decoder!r} (lstm or transformer)")

    def forward(self, audio: Tensor, text: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Teacher forcing: audio (B, 80, T), input tokens (B, T_d) -> logits (B, 35, T_d)."""
        return self.decode(text, *self.encode(audio, lengths))

    def encode(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The encoder's output and its key-padding mask (see AudioEncoderTransformer)."""
        return self._enc(audio, lengths)

    def decode(self, text: Tensor, latent: Tensor, padding: Tensor | None = None,
               return_attention: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced logits (B, 35, T_d) over an encoded batch; with return_attention,
        also the decoder's attention weights, as whisper returns qk: 'cross' (B, heads, T_d,
        frames) over the audio and, for the attention decoder, 'self' (B, heads, T_d, T_d).
        Without it the fused kernel runs (the same logits, no (T, T) weights kept)."""
        weights = {} if return_attention else None
        if self.decoder_type == "lstm":
            logits = self._dec(text, latent, latent_padding=padding, weights=weights)[0]
        else:
            logits = self._dec(text, latent, latent_padding=padding, weights=weights)
        return (logits, weights) if return_attention else logits

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: {"total", "encoder", "decoder"} (the results files report them)."""
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())
        return {"total": count(self), "encoder": count(self._enc), "decoder": count(self._dec)}

    @torch.no_grad()
    def generate(self, audio: Tensor, lengths: Tensor | None = None,
                 use_cache: bool = False, stop_token: int | None = None) -> Tensor:
        """Greedy decoding of max_text_len - 1 steps from the start token: (B, max_text_len)."""
        return self.greedy(*self.encode(audio, lengths), use_cache, stop_token)

    @torch.no_grad()
    def greedy(self, latent: Tensor, padding: Tensor | None = None, use_cache: bool = False,
               stop_token: int | None = None) -> Tensor:
        """Greedy tokens (B, max_text_len) over an encoded batch (the encoder runs once).

        As handed out, the LSTM is fed the last token with its state, the attention decoder
        the whole prefix each step; `use_cache` feeds it the last token with cached keys and
        values. With `stop_token`, decoding ends once every row has emitted it and the rest is
        filled with it (the tokens up to each first stop, all the metrics read, are the same).
        """
        text = torch.zeros(latent.shape[0], 1, dtype=torch.long, device=latent.device)
        state, cache = None, {} if (use_cache or self.decoder_type == "lstm") else None
        for step in range(self.max_text_len - 1):
            if self.decoder_type == "lstm":
                logits, state = self._dec(text[:, -1:], latent, state, padding, cache)
            elif use_cache:
                logits = self._dec(text[:, -1:], latent, padding, cache, offset=step)
            else:
                logits = self._dec(text, latent, padding)
            text = torch.cat([text, logits[:, :, -1].argmax(dim=1, keepdim=True)], dim=1)
            if stop_token is not None and (text[:, 1:] == stop_token).any(dim=1).all():
                return F.pad(text, (0, self.max_text_len - text.shape[1]), value=stop_token)
        return text
