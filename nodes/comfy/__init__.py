"""The only package of dit-accel that imports comfy.*: the boundary between ComfyUI and the pure-torch core."""
