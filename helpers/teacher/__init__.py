"""The teacher: prompt files, one chat call, the engine for many calls (or a Batch API), API quirks, reply parsing,
the local server."""
