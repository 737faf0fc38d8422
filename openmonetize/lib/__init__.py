"""The hand-written layer of openmonetize.

Everything outside `openmonetize/lib/` and `openmonetize/testing/` is generated from `openapi.yaml` by
`./generate.sh` and must not be edited by hand. Modules here are what a generator cannot write; the
generated models call into them through the spec's `x-sdk-validators` extension.
"""
