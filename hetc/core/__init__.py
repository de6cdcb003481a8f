"""The floor every other part of hetc stands on: errors, file utilities, the
registration helper, progress reporting and the target descriptions. Nothing
here imports another hetc package."""
