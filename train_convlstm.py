"""The command users know: same flags as `python -m model.train`."""

from model.train import main

if __name__ == "__main__":
    main(prog="train_convlstm.py")
