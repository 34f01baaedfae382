"""Speed and memory benchmarks: ratios measured side by side in one run (see docs/performance.md)."""
