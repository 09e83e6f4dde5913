"""Ensembles: K networks of one architecture whose outputs are averaged (k-fold training).

The saved architecture is ``{"name": "ensemble", "members": K, "member": {...},
"combine": "probability"}`` where ``member`` is one network's architecture
dictionary; :func:`napari_dlcb.models.architectures.build_model` builds it like
any other network, so :func:`napari_dlcb.models.saved.load_model` and every
caller of a saved model work on it unchanged.

``combine``:

* ``"probability"`` (binary outputs): the ensemble returns the logit of the
  mean of the members' sigmoid probabilities, computed stably as
  ``logsumexp(logsigmoid(z)) - logsumexp(logsigmoid(-z))``; a sigmoid of the
  ensemble's output is exactly the members' mean probability.
* ``"mean"`` (regression, or logits on purpose): the mean of the members' outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_dlcb.errors import DlcbError

__all__ = ["COMBINE", "MAX_MEMBERS", "Ensemble", "combine_outputs", "member_architecture"]

#: how an ensemble combines its members' outputs
COMBINE = ("probability", "mean")
#: the most members an ensemble described by metadata may have
MAX_MEMBERS = 100


def member_architecture(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """One member's architecture for an ensemble's, else the architecture itself.

    Examples
    --------
    >>> member_architecture({"name": "ensemble", "members": 3, "member": {"name": "deepbind"}})
    {'name': 'deepbind'}
    >>> member_architecture({"name": "deepbind"})
    {'name': 'deepbind'}
    """
    if architecture.get("name") == "ensemble" and isinstance(architecture.get("member"), Mapping):
        return dict(architecture["member"])
    return dict(architecture)


class Ensemble(nn.Module):
    """K networks of one architecture; the output is their average (see module docstring).

    Parameters
    ----------
    members : int
        Number of member networks (1 to :data:`MAX_MEMBERS`).
    member : dict
        The members' architecture (``{"name": ..., **arguments}``), not an ensemble.
    combine : {"probability", "mean"}
        How outputs are averaged.

    Examples
    --------
    >>> net = Ensemble(3, {"name": "deepbind", "n_tasks": 2, "kernel_size": 5})
    >>> net(torch.zeros(4, 4, 20)).shape
    torch.Size([4, 2])
    >>> net.config["members"], net.config["member"]["name"]
    (3, 'deepbind')
    """

    def __init__(self, members: int, member: Mapping[str, Any], combine: str = "probability"):
        super().__init__()
        from napari_dlcb.models.architectures import resolve_builder

        if isinstance(members, bool) or not isinstance(members, int):
            raise DlcbError(f"an ensemble's members must be an integer, got {members!r}")
        if not 1 <= members <= MAX_MEMBERS:
            raise DlcbError(f"an ensemble has 1 to {MAX_MEMBERS} members, got {members}")
        if not isinstance(member, Mapping) or not isinstance(member.get("name"), str):
            raise DlcbError("an ensemble's member must be an architecture dict with a 'name'")
        if member["name"] in ("ensemble", "torchscript"):
            raise DlcbError(f"an ensemble's members cannot be {member['name']!r} models")
        if combine not in COMBINE:
            raise DlcbError(f"combine must be one of {', '.join(COMBINE)}, not {combine!r}")
        kwargs = {k: v for k, v in member.items() if k != "name"}
        builder = resolve_builder(member["name"])
        self.members = nn.ModuleList([builder(**kwargs) for _ in range(members)])
        self.combine = combine
        self.config = {
            "name": "ensemble",
            "members": members,
            "member": dict(member),
            "combine": combine,
        }

    @classmethod
    def of(
        cls, networks: Sequence[nn.Module], member: Mapping[str, Any], combine: str = "probability"
    ) -> Ensemble:
        """An ensemble holding copies of the weights of ``networks`` (trained members).

        Parameters
        ----------
        networks : sequence of torch.nn.Module
            Networks built from ``member``.
        member : dict
            Their architecture.
        combine : {"probability", "mean"}
            How outputs are averaged.

        Returns
        -------
        Ensemble
        """
        net = cls(len(networks), member, combine)
        for mine, theirs in zip(net.members, networks, strict=True):
            mine.load_state_dict(theirs.state_dict())
        p = next(iter(networks[0].parameters()), None)
        return net.to(p.device) if p is not None else net

    def architecture(self) -> dict[str, Any]:
        """The architecture dictionary that rebuilds this ensemble."""
        return dict(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ys: list[torch.Tensor] = []
        for m in self.members:
            ys.append(m(x))
        return combine_outputs(torch.stack(ys), self.combine)


def combine_outputs(outs: torch.Tensor, combine: str) -> torch.Tensor:
    """Combine stacked member outputs ``(K, ...)`` as an :class:`Ensemble` does.

    Examples
    --------
    >>> z = torch.tensor([[0.0], [2.0]])
    >>> float(torch.sigmoid(combine_outputs(z, "probability"))[0])  # doctest: +ELLIPSIS
    0.690...
    >>> float(combine_outputs(z, "mean")[0])
    1.0
    """
    if combine == "mean":
        return outs.mean(dim=0)
    return torch.logsumexp(F.logsigmoid(outs), dim=0) - torch.logsumexp(F.logsigmoid(-outs), dim=0)
