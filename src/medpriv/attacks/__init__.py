"""Privacy attacks against trained models: membership inference, ε audit, attribute inference."""
