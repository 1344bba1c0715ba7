"""The teacher: prompt files, one chat call, the batch engine for many calls, reply parsing, the local server."""
