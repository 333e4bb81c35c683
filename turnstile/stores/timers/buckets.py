"""Which bucket a conversation's timer lives in, and which Redis Cluster slot each bucket uses.

The reference timer store keeps every timer in one sorted set under one hash tag, so a whole
Redis Cluster serves all timers from one shard. Turnstile spreads timers over ``count`` buckets;
each bucket is a sorted set and a hash that share one hash tag (so one Lua script can touch
both), and different buckets have different hash tags (so Cluster puts them on different slots).

Two decisions live here, both pure and stable across processes and releases (a change would
orphan stored timers):

* **Conversation to bucket**: ``blake2b(sender_id) mod count``. Python's ``hash()`` is salted per
  process, so two pods would disagree; a cryptographic digest also spreads arbitrary ids evenly.
* **Bucket to slot**: a hash tag is not chosen at random. Bucket ``i`` aims at slot
  ``bit_reverse_14(i)`` (the van der Corput sequence over the 16384 slots) and its tag is the
  first ``t<i>.<n>`` whose CRC16 slot falls within a few slots after that target. The first
  ``count`` targets of that sequence are evenly spaced when ``count`` is a power of two and
  nearly so otherwise, so a cluster whose masters own equal contiguous slot ranges (what
  ``redis-cli --cluster create`` and the operators produce) gets ``count / masters`` buckets per
  master, give or take one. A bucket's tag depends only on ``i``, never on ``count``.

With the default of 64 buckets, 3 masters hold 22/21/21 buckets, 6 masters 10 or 11 each,
and any cluster of up to 42 equal masters stays within 1.5x of its fair share. 64 cheap script
calls per poll cost little: they are pipelined, one round trip per master.
"""

from __future__ import annotations

import binascii
import hashlib
from functools import lru_cache
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS

#: Redis Cluster's slot count.
CLUSTER_SLOTS: Final = REDIS_CLUSTER_HASH_SLOTS
_SLOT_BITS: Final = 14
#: How far after its target slot a bucket's tag may land (0.1 % of the slot space).
_SLOT_WINDOW: Final = 16
#: The default number of buckets (see the module docstring).
DEFAULT_BUCKETS: Final = 64
#: More buckets than this only make every poll slower.
MAX_BUCKETS: Final = 4096


def bucket_of(sender_id: str, count: int) -> int:
    """The bucket of a conversation: stable across processes, hosts and Python versions."""
    digest = hashlib.blake2b(sender_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def target_slot(index: int) -> int:
    """Where bucket ``index`` should land: the 14-bit bit reversal of ``index``."""
    reversed_bits = int(f"{index % CLUSTER_SLOTS:0{_SLOT_BITS}b}"[::-1], 2)
    return reversed_bits


@lru_cache(maxsize=MAX_BUCKETS)
def bucket_tag(index: int) -> str:
    """The hash tag (without braces) of bucket ``index``; see the module docstring."""
    target = target_slot(index)
    for n in range(1_000_000):  # about CLUSTER_SLOTS / _SLOT_WINDOW = 1024 tries are expected
        tag = f"t{index}.{n}"
        if (binascii.crc_hqx(tag.encode(), 0) - target) % CLUSTER_SLOTS < _SLOT_WINDOW:
            return tag
    raise AssertionError(f"no hash tag for bucket {index} near slot {target}")  # pragma: no cover


def bucket_tags(count: int) -> tuple[str, ...]:
    """The hash tags of buckets ``0 .. count-1``."""
    return tuple(bucket_tag(i) for i in range(count))
