"""The command users know: the installed convlstm-train (python -m model.train's flags plus --num-gpus N)."""

from tune.train import main

if __name__ == "__main__":
    main(prog="train_convlstm.py")
