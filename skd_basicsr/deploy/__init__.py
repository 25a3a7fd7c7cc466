"""Deploy: what the ``basicsr infer`` and ``basicsr export`` commands run on. Image I/O (:mod:`.image_io`), tiled
inference (:mod:`.tiling`), ONNX export and running (:mod:`.onnx_util`), and the network a command runs with its
weights (:mod:`.network_io`)."""
