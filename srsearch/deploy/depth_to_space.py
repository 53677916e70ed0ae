"""Pixel shuffle as one LiteRT DEPTH_TO_SPACE op
(`srsearch.deploy.tflite.convert(depth_to_space=True)`).

litert-torch lowers ``nn.PixelShuffle`` to RESHAPE/TRANSPOSE ops in NCHW (3 RESHAPE + 3-4
TRANSPOSE, all rank 4). LiteRT's DEPTH_TO_SPACE does the same job in one NHWC op, but orders
channels differently:

    PixelShuffle (NCHW):    out[c, h*s + i, w*s + j] = in[c*s*s + i*s + j, h, w]
    DEPTH_TO_SPACE (NHWC):  out[h*s + i, w*s + j, c] = in[h, w, (i*s + j)*C + c]

so ``pixel_shuffle(v) == nchw(depth_to_space(nhwc(v[:, perm])))`` with
``perm[(i*s + j)*C + c] = c*s*s + i*s + j``. The permutation costs nothing at run time when it
is folded into the layers that produce ``v``: a conv's output channels (weight and bias rows),
through adds and channel-wise activations, and a ``repeat_interleave`` skip becomes a
``cat([x] * s*s)`` (CONCATENATION). `depth_to_space_form` does that on a torch.fx trace of the
model and refuses (ConversionError) anything it cannot fold, rather than leave a GATHER behind.

The op reaches the flatbuffer as a torch custom op ``srsearch::depth_to_space`` lowered to
``tfl.depth_to_space`` through litert-torch's lowering registry (`srsearch.deploy._tfl_ops`).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from srsearch.common.errors import ConversionError
from srsearch.deploy._tfl_ops import lower_to_tfl

# Max abs difference between the rewritten and the original module: the same sums with output
# channels in another order, so only conv blocking changes (measured ~5e-7).
REWRITE_ATOL = 1e-5


@torch.library.custom_op("srsearch::depth_to_space", mutates_args=())
def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TF/LiteRT DEPTH_TO_SPACE (DCR order).  # (N, H, W, s*s*C) -> (N, H*s, W*s, C)"""
    n, h, w, c = x.shape
    oc = c // (block * block)
    x = x.reshape(n, h, w, block, block, oc).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, oc)


@depth_to_space.register_fake
def _(x: torch.Tensor, block: int) -> torch.Tensor:
    n, h, w, c = x.shape
    return x.new_empty((n, h * block, w * block, c // (block * block)))


lower_to_tfl(
    torch.ops.srsearch.depth_to_space.default,
    "tfl.depth_to_space",
    lambda ir, block: {"block_size": ir.IntegerAttr.get(ir.IntegerType.get_signless(32), block)},
)


def d2s_permutation(channels: int, scale: int) -> list[int]:
    """perm with ``v[:, perm]`` in DEPTH_TO_SPACE order for a pixel shuffle of `channels` out."""
    s2 = scale * scale
    return [c * s2 + q for q in range(s2) for c in range(channels)]


def depth_to_space_form(model: nn.Module, sample: torch.Tensor) -> fx.GraphModule:
    """`model` with every pixel shuffle replaced by DEPTH_TO_SPACE, channels permuted upstream.

    Raises:
        ConversionError: the model cannot be traced by torch.fx, or a pixel shuffle's input
            comes from an op the permutation cannot be folded into.
    """
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:  # noqa: BLE001 - any trace failure means "cannot rewrite"
        raise ConversionError(
            f"{type(model).__name__} cannot be traced by torch.fx for the DEPTH_TO_SPACE "
            f"rewrite ({type(exc).__name__}: {exc}); export without depth_to_space"
        ) from exc
    ShapeProp(gm).propagate(sample)
    rewriter = _Rewriter(gm)
    for node in list(gm.graph.nodes):
        scale = _shuffle_scale(gm, node)
        if scale is None:
            continue
        src = node.args[0]
        channels = _shape(src)[1] // (scale * scale)
        with gm.graph.inserting_before(node):
            permuted = rewriter.permute(src, tuple(d2s_permutation(channels, scale)))
            nhwc = gm.graph.call_method("permute", (permuted, 0, 2, 3, 1))
            d2s = gm.graph.call_function(torch.ops.srsearch.depth_to_space.default, (nhwc, scale))
            nchw = gm.graph.call_method("permute", (d2s, 0, 3, 1, 2))
        node.replace_all_uses_with(nchw)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    gm.delete_all_unused_submodules()
    with torch.no_grad():
        diff = float((gm(sample) - model(sample)).abs().max())
    if not diff <= REWRITE_ATOL:
        raise ConversionError(
            f"DEPTH_TO_SPACE rewrite of {type(model).__name__} changed its output by {diff:.3g} "
            f"(> {REWRITE_ATOL:g}); export without depth_to_space and report the model"
        )
    return gm.eval()


def _shuffle_scale(gm: fx.GraphModule, node: fx.Node) -> int | None:
    if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.PixelShuffle):
        return int(gm.get_submodule(node.target).upscale_factor)
    if node.op == "call_function" and node.target in (F.pixel_shuffle, torch.pixel_shuffle):
        return int(node.args[1] if len(node.args) > 1 else node.kwargs["upscale_factor"])
    return None


def _shape(node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


# Channel-wise ops: f(v)[:, perm] == f(v[:, perm]).
_UNARY_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.Identity, nn.LeakyReLU, nn.Hardtanh, nn.SiLU,
    nn.GELU, nn.ELU,
)  # fmt: skip
_UNARY_FUNCTIONS: set[Callable] = {
    F.relu, torch.relu, F.relu6, torch.tanh, torch.sigmoid, F.leaky_relu, F.hardtanh,
    torch.clamp, F.silu, F.gelu, F.elu,
}  # fmt: skip
_UNARY_METHODS = {"relu", "tanh", "sigmoid", "clamp", "clamp_min", "clamp_max", "contiguous"}
_BINARY = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul}


class _Rewriter:
    """Builds ``v[:, perm]`` for graph values by folding the permutation into producers."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.done: dict[tuple[fx.Node, tuple[int, ...]], fx.Node] = {}
        self.count = 0

    def permute(self, node: fx.Node, perm: tuple[int, ...]) -> fx.Node:
        key = (node, perm)
        if key not in self.done:
            self.done[key] = self._permute(node, perm)
        return self.done[key]

    def _fail(self, node: fx.Node, why: str) -> ConversionError:
        return ConversionError(
            f"cannot fold the DEPTH_TO_SPACE channel order into `{node.format_node()}`: {why}; "
            "export without depth_to_space (the pixel shuffle then lowers to RESHAPE/TRANSPOSE)"
        )

    def _name(self, base: str) -> str:
        self.count += 1
        return f"_d2s_{base.replace('.', '_')}_{self.count}"

    def _permute(self, node: fx.Node, perm: tuple[int, ...]) -> fx.Node:
        g, idx = self.graph, torch.tensor(perm)
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            if isinstance(mod, _UNARY_MODULES) or (
                isinstance(mod, nn.PReLU) and mod.num_parameters == 1
            ):
                return g.call_module(node.target, (self.permute(node.args[0], perm),))
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.PReLU)):
                if getattr(mod, "groups", 1) != 1:
                    raise self._fail(node, f"grouped conv (groups={mod.groups})")
                new = copy.deepcopy(mod)
                with torch.no_grad():
                    dim = 1 if isinstance(mod, nn.ConvTranspose2d) else 0
                    new.weight.copy_(mod.weight.index_select(dim, idx))
                    if getattr(mod, "bias", None) is not None:
                        new.bias.copy_(mod.bias[idx])
                name = self._name(node.target)
                self.gm.add_submodule(name, new)
                args = node.args
                if isinstance(mod, nn.PReLU):  # channel-wise: its input is permuted too
                    args = (self.permute(node.args[0], perm),)
                return g.call_module(name, args, node.kwargs)
            raise self._fail(node, f"{type(mod).__name__} is not known to be channel-wise")
        if node.op == "call_function" and node.target in _UNARY_FUNCTIONS:
            return g.call_function(
                node.target, (self.permute(node.args[0], perm), *node.args[1:]), node.kwargs
            )
        if node.op == "call_method" and node.target in _UNARY_METHODS:
            return g.call_method(
                node.target, (self.permute(node.args[0], perm), *node.args[1:]), node.kwargs
            )
        if node.op == "call_function" and node.target in _BINARY:
            args = [self._operand(a, node, perm) for a in node.args]
            return g.call_function(node.target, tuple(args), node.kwargs)
        if node.op == "call_function" and node.target in (F.conv2d, torch.conv2d):
            return self._functional_conv(node, idx)
        if node.op == "call_method" and node.target == "repeat_interleave":
            return self._repeat_interleave(node, perm)
        if node.op == "get_attr":  # a constant, e.g. a per-channel bias (1, C, 1, 1)
            value = operator.attrgetter(node.target)(self.gm)
            name = self._name(node.target)
            self.gm.register_buffer(name, value.detach().index_select(1, idx).clone())
            return g.get_attr(name)
        raise self._fail(node, "unsupported producer")

    def _operand(self, arg, node: fx.Node, perm: tuple[int, ...]):
        if not isinstance(arg, fx.Node):
            return arg  # a Python scalar
        shape = _shape(arg)
        if len(shape) < 2 or shape[1] == 1:
            return arg  # broadcast along channels
        if shape[1] != len(perm):
            raise self._fail(node, f"operand with {shape[1]} channels, expected {len(perm)}")
        return self.permute(arg, perm)

    def _functional_conv(self, node: fx.Node, idx: torch.Tensor) -> fx.Node:
        args = list(node.args)
        groups = args[6] if len(args) > 6 else node.kwargs.get("groups", 1)
        if groups != 1:
            raise self._fail(node, f"grouped conv (groups={groups})")
        for i in (1, 2):  # weight, bias
            if i >= len(args) or args[i] is None:
                continue
            if not (isinstance(args[i], fx.Node) and args[i].op == "get_attr"):
                raise self._fail(node, "conv weight/bias is not a module attribute")
            value = operator.attrgetter(args[i].target)(self.gm)
            name = self._name(args[i].target)
            self.gm.register_buffer(name, value.detach().index_select(0, idx).clone())
            args[i] = self.graph.get_attr(name)
        return self.graph.call_function(node.target, tuple(args), node.kwargs)

    def _repeat_interleave(self, node: fx.Node, perm: tuple[int, ...]) -> fx.Node:
        x = node.args[0]
        repeats = node.args[1] if len(node.args) > 1 else node.kwargs.get("repeats")
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
        channels = _shape(x)[1]
        if not isinstance(repeats, int) or dim != 1:
            raise self._fail(node, "only repeat_interleave(x, int, dim=1) is folded")
        # Output channel k of v[:, perm] is x[:, perm[k] // repeats]; fold when that is the
        # tiling x, x, ..., x (what the DEPTH_TO_SPACE order makes of a repeat_interleave).
        if [p // repeats for p in perm] != [k % channels for k in range(len(perm))]:
            raise self._fail(node, "the permuted repeat is not a tiling of its input")
        return self.graph.call_function(torch.cat, ([x] * repeats, 1))
