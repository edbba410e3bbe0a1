import sys

if __name__ == "__main__":
    from mdm.allocator import use_fast_allocator

    use_fast_allocator()  # re-executes this command under mimalloc first (MDM_ALLOCATOR=system: off)

from benchmarks.run import main  # noqa: E402

sys.exit(main())
