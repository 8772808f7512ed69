"""R copies of hw2-q2.py's CNN trained as one grouped network: Question 2's learning rates
side by side. At batch 8 a step costs mostly Python and dispatch overhead, which R runs pay
once here; `sgd_step` writes the backward pass out (no autograd graph). Each copy makes the
handed-out loop's updates: the same initial weights, batches (`train_epoch` draws them as the
handed-out DataLoader does), dropout mask and torch.optim.SGD step, so the results equal
separate runs up to float rounding (tests/test_q2.py). Imports nothing but torch.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight
from torch.utils.data import DataLoader


def stacked_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A CNN parameter as SideBySideCNN keeps one copy of it, and back: linear weights
    transposed to (in, out), so that the batched products read contiguous memory."""
    return tensor.t() if name.startswith("fc") and name.endswith("weight") else tensor


class SideBySideCNN(nn.Module):
    """R copies of hw2-q2.py's CNN as one network: forward maps (B, 784) images to the
    log-probabilities of every copy, (R, B, 4); `sgd_step` trains all copies on a batch."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        first = models[0]
        self.n_copies, self.no_maxpool, self.dropout_prob = len(models), first.no_maxpool, \
            first.drop.p
        self.stride = first.conv1.stride[0]
        for name, _ in first.named_parameters():  # conv1.weight -> conv1_weight, (R, ...)
            stacked = torch.stack([stacked_layout(name, dict(m.named_parameters())[name].detach())
                                   for m in models])
            self.register_parameter(name.replace(".", "_"), nn.Parameter(stacked.contiguous()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every copy's log-probabilities (training goes through `sgd_step`)."""
        return self.forward_pass(x)[0]

    def forward_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, SimpleNamespace]:
        """The log-probabilities and the activations `sgd_step`'s backward pass reads."""
        r, b, size = self.n_copies, x.shape[0], 28 // self.stride
        a = SimpleNamespace(patches=conv1_patches(x, self.stride))
        # conv1 (one input channel) as one matrix product over the 3x3 patches; its output
        # comes out channels-last, which PyTorch's CPU max-pooling reads several times faster
        z1 = torch.addmm(self.conv1_bias.view(-1), a.patches.t(),
                         self.conv1_weight.view(r * 8, 9).t())
        a.h1, a.pool1 = self.pool_relu(z1.view(b, size, size, r * 8).permute(0, 3, 1, 2))
        z2 = F.conv2d(a.h1, self.conv2_weight.flatten(0, 1), self.conv2_bias.flatten(),
                      stride=self.stride, groups=r)
        a.h2, a.pool2 = self.pool_relu(z2)
        a.x3 = a.h2.reshape(b, r, 16 * 6 * 6).transpose(0, 1)  # each CNN's flatten
        a.h3 = F.relu(torch.baddbmm(self.fc1_bias[:, None], a.x3, self.fc1_weight))
        # one mask for all copies, drawn by the very call CNN's nn.Dropout makes
        a.mask = F.dropout(a.h3.new_ones(a.h3.shape[1:]), self.dropout_prob, self.training)
        a.x4 = a.h3 * a.mask
        a.h4 = F.relu(torch.baddbmm(self.fc2_bias[:, None], a.x4, self.fc2_weight))
        logits = torch.baddbmm(self.fc3_bias[:, None], a.h4, self.fc3_weight)
        return F.log_softmax(logits, dim=-1), a

    def pool_relu(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CNN's ReLU then 2x2 max-pooling, computed as pooling then ReLU: the same values and
        gradients (ReLU is monotone), with the ReLU on a quarter of the elements. Returns the
        map and the pooling indices (None without pooling)."""
        if self.no_maxpool:
            return F.relu(z), None
        pooled, indices = F.max_pool2d(z, kernel_size=2, return_indices=True)
        return F.relu(pooled), indices

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, learning_rates: torch.Tensor,
                 l2_decay: float = 0.0) -> torch.Tensor:
        """One SGD step of every copy on the batch: copy r makes torch.optim.SGD(lr=lr_r,
        weight_decay=l2_decay)'s update, p <- p - lr_r (dL_r/dp + l2_decay p), L_r its mean
        NLL loss. Returns the losses L_r, (R,).

        The backward pass is written out: at batch 8 autograd's bookkeeping is a large share
        of a step, and written out, each layer's update goes into its weights as soon as the
        gradient for the layer below has been computed from them. The output gradient is
        scaled by lr_r first, so every later gradient is already copy r's step."""
        r, b = self.n_copies, x.shape[0]
        log_probs, a = self.forward_pass(x)
        target = y.expand(r, b).unsqueeze(2)
        losses = -log_probs.gather(2, target).squeeze(2).mean(dim=1)
        grad = log_probs.exp().scatter_add_(2, target, log_probs.new_full((r, b, 1), -1.0))
        grad.mul_((learning_rates / b).view(r, 1, 1))  # lr_r d L_r / d logits
        decay = 1 - learning_rates * l2_decay if l2_decay else None
        grad = self.linear_backward("fc3", a.h4, grad, decay).masked_fill_(a.h4 <= 0, 0)
        grad = self.linear_backward("fc2", a.x4, grad, decay).mul_(a.mask) \
            .masked_fill_(a.h3 <= 0, 0)  # through dropout and ReLU
        grad = self.linear_backward("fc1", a.x3, grad, decay)
        grad = self.pool_relu_backward(grad.transpose(0, 1).reshape(a.h2.shape), a.h2, a.pool2)
        grad = self.conv2_backward(a.h1, grad, decay)
        grad = self.pool_relu_backward(grad, a.h1, a.pool1)
        grad = grad.permute(0, 2, 3, 1).reshape(-1, r * 8)  # (B*H*W, R*8), as conv1 computed
        sgd_update(self.conv1_weight, torch.mm(a.patches, grad).t(), decay)
        sgd_update(self.conv1_bias, grad.sum(dim=0), decay)
        return losses

    def linear_backward(self, name: str, inputs: torch.Tensor, grad: torch.Tensor,
                        decay: torch.Tensor | None) -> torch.Tensor:
        """The gradient at the inputs of linear layer `name` from the one at its outputs,
        (R, B, out); then the layer's update, W -= x^T grad (one pass over W without weight
        decay)."""
        weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
        input_grad = torch.bmm(grad, weight.transpose(1, 2))
        apply_decay(weight, decay)
        weight.baddbmm_(inputs.transpose(1, 2), grad, alpha=-1)
        sgd_update(bias, grad.sum(dim=1), decay)
        return input_grad

    def conv2_backward(self, inputs: torch.Tensor, grad: torch.Tensor,
                       decay: torch.Tensor | None) -> torch.Tensor:
        """The gradient at conv2's inputs, then conv2's update. The gradient comes out
        channels-last as the inputs are (it follows the weight's layout), so that for conv1 it
        needs no copy."""
        weight, groups = self.conv2_weight.flatten(0, 1), self.n_copies
        input_grad = conv2d_input(inputs.shape,
                                  weight.contiguous(memory_format=torch.channels_last), grad,
                                  stride=self.stride, groups=groups)
        sgd_update(self.conv2_weight, conv2d_weight(inputs, weight.shape, grad,
                                                    stride=self.stride, groups=groups), decay)
        sgd_update(self.conv2_bias, grad.sum(dim=(0, 2, 3)), decay)
        return input_grad

    def pool_relu_backward(self, grad: torch.Tensor, out: torch.Tensor,
                           indices: torch.Tensor | None) -> torch.Tensor:
        """The gradient at z from the one at out (which it overwrites), for out, indices =
        pool_relu(z)."""
        grad.masked_fill_(out <= 0, 0)
        if indices is None:
            return grad
        return F.max_unpool2d(grad, indices, kernel_size=2,
                              output_size=(2 * out.shape[2], 2 * out.shape[3]))

    def copy_state_dict(self, r: int) -> dict[str, torch.Tensor]:
        """Copy r's weights as a CNN state dict."""
        return {name.replace("_", ".", 1): stacked_layout(name, p[r].detach()).clone()
                for name, p in self.named_parameters()}


def apply_decay(param: torch.Tensor, decay: torch.Tensor | None) -> None:
    """param <- decay_r param for every copy r (weight decay's part of the SGD step)."""
    if decay is not None:
        param.mul_(decay.view(-1, *[1] * (param.dim() - 1)))


def sgd_update(param: torch.Tensor, step: torch.Tensor, decay: torch.Tensor | None) -> None:
    """param <- decay_r param - step for every copy r; `step` holds the copies' steps in any
    shape with R x param[0].numel() elements."""
    apply_decay(param, decay)
    param.sub_(step.reshape(param.shape))


def conv1_patches(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, 784) images -> (9, B*H*W): the 3x3 patches conv1 (padding 1) sees, one row per
    kernel tap, so that conv1 is one matrix product and its weight gradient another."""
    b, size = x.shape[0], 28 // stride
    padded = F.pad(x.view(b, 28, 28), (1, 1, 1, 1))
    return padded.as_strided((3, 3, b, size, size), (30, 1, 900, 30 * stride, stride)) \
        .reshape(9, -1)


def train_epoch(model: SideBySideCNN, X: torch.Tensor, y: torch.Tensor,
                learning_rates: torch.Tensor, l2_decay: float, batch_size: int) -> torch.Tensor:
    """One epoch in the handed-out loop's batch order; every batch loss, (R, batches)."""
    model.train()
    batches = DataLoader(range(len(X)), batch_size=batch_size, shuffle=True)
    return torch.stack([model.sgd_step(X[i], y[i], learning_rates, l2_decay) for i in batches],
                       dim=1)
