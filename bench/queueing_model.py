"""What p99 / p50 can a one-tower batching server reach at half its peak load?

Simulates Poisson arrivals at half the peak rate into one tower that runs
batches of up to `max_batch` waiting requests, a batch of n costing
`fixed + per_item * n` seconds, plus a constant per-request overhead (decode,
network). With the ViT-B/32 image tower measured on this CPU (about 10 ms per
batch plus 42 ms per image: batching buys almost nothing), every batch limit
gives p99 / p50 between 3.4 and 3.8, so a goal of 3 is out of reach for any
dynamic-batching setting. With a large fixed cost per batch and a cheap item
(`--fixed-ms 8 --per-item-ms 1.4 --overhead-ms 8`, like the bundled model) and
batches of up to 64, it is 1.6: batching is what keeps tails short. "Peak" is
1 / per_item, so small batch limits with a large fixed cost are overloaded.

    python bench/queueing_model.py [--fixed-ms 10] [--per-item-ms 42.5] [--overhead-ms 10]
"""

from __future__ import annotations

import argparse

import numpy as np


def simulate(fixed: float, per_item: float, overhead: float, max_batch: int, load: float = 0.5,
             requests: int = 100_000, seed: int = 0) -> tuple[float, float]:
    """(p50, p99) of the request latency in seconds at `load` x the peak rate (1 / per_item)."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(per_item / load, requests))
    latencies = np.empty(requests)
    free, first = 0.0, 0
    while first < requests:
        start = max(free, arrivals[first])
        last = int(np.searchsorted(arrivals, start, side="right"))
        last = min(max(last, first + 1), first + max_batch)
        free = start + fixed + per_item * (last - first)
        latencies[first:last] = free - arrivals[first:last] + overhead
        first = last
    p50, p99 = np.percentile(latencies, [50, 99])
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixed-ms", type=float, default=10.0, help="cost of a batch beyond its items")
    parser.add_argument("--per-item-ms", type=float, default=42.5, help="cost of each item in a batch")
    parser.add_argument("--overhead-ms", type=float, default=10.0, help="per-request cost outside the tower")
    args = parser.parse_args()
    print(f"batch cost {args.fixed_ms:g} ms + {args.per_item_ms:g} ms x n, {args.overhead_ms:g} ms per request "
          "outside it, Poisson arrivals at half the peak rate")
    print(f"{'max batch':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8}")
    for max_batch in (1, 2, 4, 8, 64):
        p50, p99 = simulate(args.fixed_ms / 1e3, args.per_item_ms / 1e3, args.overhead_ms / 1e3, max_batch)
        print(f"{max_batch:>9} {p50 * 1e3:>8.1f} {p99 * 1e3:>8.1f} {p99 / p50:>8.2f}")


if __name__ == "__main__":
    main()
