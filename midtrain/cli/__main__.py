"""`python -m midtrain.cli`."""

from midtrain.cli import main

main()
