"""The at-least-once stream runtime every consumer of the fleet stands on (docs/architecture.md#stream-runtime).

What is common to every consumer lives here once, so a reliability rule reaches every role:

- `ledger`: which offsets are finished, per partition: the committed offset never passes unfinished work,
  and each commit carries the finished offsets above it (`offset_codec`) so a new owner skips them;
- `commit`: a commit that did not take (a rebalance under it) is taken again by the next one;
- `sender`: produce and know that the broker acknowledged, with one failure policy;
- `diversion`: a message that is not what its topic carries goes to the invalid topic with its reason,
  counted in one metric vocabulary, and the partition moves on;
- `close`: leaving the group is bounded (librdkafka can hang in close);
- `watchdog`: a member stuck joining its group while the broker answers is replaced.

Roles keep only their handler logic: what a message means and what to produce for it.
"""
