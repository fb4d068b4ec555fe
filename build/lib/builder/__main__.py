"""`python -m builder` entry point."""

from builder.cli import main

if __name__ == "__main__":
    main()
