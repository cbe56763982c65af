"""`make bench`: the benchmark report (to be filled by the benchmark issue)."""


def main() -> int:
    print("no benchmarks yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
