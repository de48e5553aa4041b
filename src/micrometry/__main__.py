"""``python -m micrometry`` (also what ``torchrun -m micrometry`` runs)."""

from micrometry.cli import main

if __name__ == "__main__":
    main()
