"""The recipe that trains HeartSeg's shipped nnU-Net v2 model (``make model``)."""
