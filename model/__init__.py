"""Pure nn.Modules: backbones, heads (FCN, PPM, ASPP, DANet, OCR, GRAr), the segmentor."""
