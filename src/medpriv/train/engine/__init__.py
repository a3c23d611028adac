"""The shared training machinery the trainers wrap (the loop lives in `medpriv.train.loop`)."""
