"""Training: patch streaming from the store, the Res-UNet, the region Dice loss, the loop."""
