"""The chat's HITL tools: a labelling session over the chat's gallery, seeded by the current image.

    hitl_start(session, target)      the current image joins the gallery as the first positive
    hitl_next(session)               the round to label (a gallery of thumbnails with their ids)
    hitl_label(session, labels)      {"id": true/false, ...}; each label saved at once
    hitl_export(session, format)     CSV or Parquet in the app's export folder; returns the path

Sessions live in one SQLite file (ToolResources.hitl_dir); the tools name images by gallery id, never by
path, and exports go only to that folder.
"""

from __future__ import annotations

import numpy as np

from app.hitl.session import HITLSession
from app.images import ChatImage

UPLOAD_ID = "upload"  # the id of the image a session was started from


class HITLError(Exception):
    """A call the session cannot serve (unknown session or id); goes back to the model as an error."""


def _open(resources, session: str) -> HITLSession:
    try:
        return HITLSession.open(resources.hitl_dir / "hitl.sqlite", session)
    except ValueError as exc:
        raise HITLError(str(exc)) from None


def tool_hitl_start(
    resources, image: ChatImage, session: str, target: str, alpha: float = 0.5, round_size: int = 10
):
    gallery = resources.gallery
    size = resources.lvm.config.img_size
    pool = np.concatenate([gallery.thumbnails, image.model_view(size)[None]])
    names = [*gallery.ids, UPLOAD_ID]
    try:
        hitl = HITLSession.create(
            resources.hitl_dir / "hitl.sqlite", session, pool, target=target, alpha=alpha, round_size=round_size,
            lvm=resources.lvm, progress=False, item_names=names,
        )  # fmt: skip
    except ValueError as exc:
        raise HITLError(str(exc)) from None
    hitl.label(len(names) - 1, True)
    return {
        "session": session,
        "target": target,
        "pool": len(names),
        "alpha": alpha,
        "round_size": round_size,
    }, None


def tool_hitl_next(resources, session: str):
    hitl = _open(resources, session)
    picks = hitl.next_round()
    thumbnails = _thumbnails(resources, hitl)
    result = {
        "session": session,
        "round": hitl.round,
        "images": [{"id": p.item, "score": round(p.score, 4)} for p in picks],
    }
    visual = [(thumbnails[p.idx], f"{p.item} {p.score:.2f}") for p in picks]
    return result, visual


def tool_hitl_label(resources, session: str, labels: dict):
    hitl = _open(resources, session)
    index = {item: i for i, item in enumerate(hitl.items)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise HITLError(f"unknown image ids {unknown[:5]}; label the ids hitl_next returned")
    for item, is_target in labels.items():
        hitl.label(index[item], is_target)
    return {"session": session, "labelled": len(labels), "progress": hitl.progress()}, None


def tool_hitl_export(resources, session: str, format: str = "csv"):
    hitl = _open(resources, session)
    path = hitl.export(resources.hitl_dir / f"{session}.{format}")
    return {"session": session, "path": str(path), "progress": hitl.progress()}, None


def _thumbnails(resources, hitl: HITLSession) -> dict[int, np.ndarray]:
    gallery = resources.gallery
    by_id = dict(zip(gallery.ids, gallery.thumbnails))
    blank = np.zeros_like(gallery.thumbnails[0])
    return {i: by_id.get(item, blank) for i, item in enumerate(hitl.items)}


HITL_TOOLS = {
    "hitl_start": tool_hitl_start,
    "hitl_next": tool_hitl_next,
    "hitl_label": tool_hitl_label,
    "hitl_export": tool_hitl_export,
}
