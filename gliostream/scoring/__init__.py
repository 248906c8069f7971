"""`brats score`: sliding-window prediction, BraTS metrics per case, the CSV report, exports."""
