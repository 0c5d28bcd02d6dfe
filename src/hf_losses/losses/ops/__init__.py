"""The kernels and autograd Functions of the losses (public within ``losses.ops``; users call the functional
forms and Modules of ``hf_losses.losses``)."""
