"""`python -m tests.reliability.train_with_faults ARGS`: train_convlstm.py with tests/tune/_faults.py installed.

The faults come from the JSON file named by $CONVLSTM_TEST_FAULTS, as in the Ray workers of the search tests.
"""

from tests.tune._faults import install

if __name__ == "__main__":
    install()
    from model.train import main

    main(prog="train_convlstm.py")
