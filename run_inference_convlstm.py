"""graphcast's inference command line on this project's code (model.inference): python run_inference_convlstm.py
--checkpoint best.pt --data F.nc --output-dir out/ [--start-time T --end-time T] [--rolling-steps N] ..."""

from model.inference import main

if __name__ == "__main__":
    main()
