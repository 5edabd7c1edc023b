"""Personal defaults (`/settings`): each member's own value for an option they leave out.

Values are checked against the same limits as a request (`GenerateRequest.check`, the
operator's sizes and step cap) when they are set, so a stored default is one the member could
have typed. Whatever the operator narrows later wins at use: `ImagineService` ignores a stored
size no longer offered and caps stored steps at `LEXICON_MAX_STEPS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.config import Settings
from bot.services import ServiceError
from engine.jobs import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, GenerateRequest, RequestError
from storage.preferences import MemberDefaults, PreferenceRepository

FIELDS = tuple(field.name for field in dataclasses.fields(MemberDefaults))


class DefaultsService:
    def __init__(self, settings: Settings, preferences: PreferenceRepository) -> None:
        self.settings = settings
        self.preferences = preferences

    async def show(self, user_id: int) -> MemberDefaults:
        return await self.preferences.get(user_id)

    async def update(self, user_id: int, **changes: Any) -> MemberDefaults:
        """Set the given defaults (None leaves one as it is); refuse a bad value in one
        sentence with nothing changed."""
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise ValueError(f"not a personal default: {', '.join(sorted(unknown))}")
        given = {name: value for name, value in changes.items() if value is not None}
        if not given:
            raise ServiceError("Give at least one setting to change, or use /settings reset.")
        if "negative" in given:
            given["negative"] = str(given["negative"]).strip()
        self._check(given)
        current = await self.preferences.get(user_id)
        return await self.preferences.set(user_id, dataclasses.replace(current, **given))

    async def reset(self, user_id: int) -> MemberDefaults:
        """Forget every personal default: the operator's apply again."""
        return await self.preferences.set(user_id, MemberDefaults())

    def _check(self, given: dict[str, Any]) -> None:
        size = given.get("size")
        if size is not None and size not in self.settings.allowed_sizes:
            raise ServiceError(
                f"size {size} is not offered here; choose one of "
                f"{', '.join(self.settings.allowed_sizes)}."
            )
        width, height = (int(side) for side in (size or "64x64").split("x"))
        probe = GenerateRequest(
            prompt="a probe of the defaults",
            negative=given.get("negative", ""),
            count=given.get("count", 1),
            steps=given.get("steps", 1),
            guidance=given.get("guidance", DEFAULT_GUIDANCE),
            seed=0,
            width=width,
            height=height,
            sampler=given.get("sampler", DEFAULT_SAMPLER),
        )
        try:
            probe.check(max_steps=self.settings.max_steps)
        except RequestError as error:
            raise ServiceError(str(error)) from None
