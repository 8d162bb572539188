"""Skills: named single-purpose tasks — a prompt, a tool allowlist, a typed output.

One module per skill, each defining ``SKILL``; :mod:`.registry` finds them. Adding a skill
is adding a module here (and its test).
"""
