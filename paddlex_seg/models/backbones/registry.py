"""The backbone registry: one dict from name to builder.

A builder is a function ``builder(**kwargs) -> nn.Layer``; its ``__name__`` is the
backbone's name. Every backbone honours one contract:

* ``backbone.feat_channels`` is a list of ints;
* ``backbone(x)`` returns a list of feature maps, one per entry of ``feat_channels``,
  with those channel counts, ordered from the highest resolution to the lowest.
"""
import difflib
import fnmatch

BACKBONES = {}


def register(builder):
    """Decorator: add ``builder`` to the registry under its function name."""
    name = builder.__name__
    if name in BACKBONES:
        raise KeyError(f"backbone {name!r} is registered twice")
    BACKBONES[name] = builder
    return builder


def list_backbones(pattern="*"):
    """Sorted names of the registered backbones, optionally filtered by a glob pattern."""
    return sorted(n for n in BACKBONES if fnmatch.fnmatch(n, pattern))


def check_backbone_name(name, argument="backbone"):
    """Raise ValueError naming close matches if ``name`` is not a registered backbone."""
    if name in BACKBONES:
        return
    close = difflib.get_close_matches(str(name), BACKBONES, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"{argument}={name!r} is not a known backbone.{hint} "
        f"Known backbones: {', '.join(list_backbones())}.")


def get_backbone(name, **kwargs):
    """Build the backbone registered as ``name`` with ``kwargs``."""
    check_backbone_name(name)
    return BACKBONES[name](**kwargs)
