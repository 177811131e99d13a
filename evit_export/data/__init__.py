"""Image sources: the embedded digits, ImageFolder trees, held-out and calibration images.
Beside ``core`` at the bottom of the floor plan: imports nothing above it."""
