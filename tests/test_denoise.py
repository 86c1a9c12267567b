import torch

from harness.models import load_scheduler
from harness.pipeline.denoise import SegmentLatents, denoise


class RecordingUNet:
    """Predicts noise = mean of the audio embedding per sample, so guidance is visible in the result."""

    def __init__(self):
        self.calls = []

    def __call__(self, sample, t, audio):
        self.calls.append((sample.shape, int(t), audio.shape))
        b, _, f, h, w = sample.shape
        level = audio.reshape(b, f, -1).mean(-1)  # (b, f)
        return level[:, None, :, None, None].expand(b, 4, f, h, w).clone()


def _inputs(f=3, b=1):
    shape = (b, 4, f, 2, 2)
    return SegmentLatents(
        noise=torch.randn(shape),
        mask=torch.ones(b, 1, f, 2, 2),
        masked=torch.zeros(shape),
        reference=torch.zeros(shape),
        audio=torch.ones(b * f, 50, 8),
    )


def test_guided_batch_is_zero_audio_then_audio_and_combined():
    unet = RecordingUNet()
    inputs = _inputs()
    out_guided = denoise(unet, load_scheduler("ddim"), inputs, steps=3, guidance=1.5)
    assert [c[0] for c in unet.calls] == [torch.Size([2, 13, 3, 2, 2])] * 3
    assert unet.calls[0][2] == torch.Size([6, 50, 8])
    assert [c[1] for c in unet.calls] == [667, 334, 1]
    # uncond predicts 0, cond predicts 1: guided noise = 1.5, the same as an unguided model predicting 1.5
    unet_plain = RecordingUNet()
    inputs.audio = inputs.audio * 1.5
    out_plain = denoise(unet_plain, load_scheduler("ddim"), inputs, steps=3, guidance=1.0)
    assert [c[0] for c in unet_plain.calls] == [torch.Size([1, 13, 3, 2, 2])] * 3
    torch.testing.assert_close(out_guided, out_plain)
