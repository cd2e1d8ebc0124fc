"""Feedback on a generation: a rating (1-5) and/or a corrected completion, through ``/v1/feedback``.

A generation's id is accepted as any endpoint returned it (``cmpl-<id>``, ``chatcmpl-<id>`` or the bare
id). A corrected completion is stored under the server's privacy mode, as prompts are: masked under
``mask``, and not at all under ``hash`` (a request that would then record nothing is refused).
"""

from __future__ import annotations

import asyncio

from fanbu.collect.hashing import stored_form
from fanbu.collect.store import LogStore, LogStoreError
from fanbu.serve.config import ServeConfig
from fanbu.serve.errors import ApiError
from fanbu.serve.schemas import FeedbackRequest, GenerationFeedbackResponse
from fanbu.serve.texts import check_texts

PREFIXES = ("chatcmpl-", "cmpl-")


def generation_id(given: str) -> str:
    """The log's id of a generation id as an endpoint returned it."""
    for prefix in PREFIXES:
        if given.startswith(prefix):
            return given[len(prefix) :]
    return given


async def record_generation_feedback(
    store: LogStore, config: ServeConfig, body: FeedbackRequest
) -> GenerationFeedbackResponse | None:
    """Record ``body`` if it names a generation; ``None`` if it names none (a prediction, or nothing)."""
    gen_id = generation_id(body.prediction_id)
    if not await asyncio.to_thread(store.has_generation, gen_id):
        return None
    if body.label is not None:
        raise ApiError(
            422,
            "label_on_generation",
            f"{body.prediction_id!r} is a generation: it takes a rating (1-5) and/or a corrected "
            "'completion', not a label",
        )
    stored = None
    if body.completion is not None:
        check_texts([body.completion], config.limits)
        stored, _ = stored_form(body.completion, config.privacy)
        if stored is None and body.rating is None:
            raise ApiError(
                422,
                "completion_not_kept",
                "privacy mode 'hash' keeps no text, so a corrected completion cannot be stored: send a rating",
            )
    try:
        await asyncio.to_thread(store.add_generation_feedback, gen_id, body.rating, stored)
    except LogStoreError as exc:
        raise ApiError(503, "store_unavailable", f"the feedback could not be recorded: {exc}") from None
    return GenerationFeedbackResponse(
        generation_id=gen_id, rating=body.rating, completion_stored=stored is not None
    )
