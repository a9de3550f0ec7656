//! Cache-to-Cache math: the fuser projector, layer mapping, token alignment, selection and rate allocation.
