"""Auto-labelling and semi-automatic labelling (docs/autolabel.md).

    perception autolabel clip.mp4 --teacher models/demo.onnx --out clip.labelled.mcap [--every K] [--end S]
    perception autolabel review clip.labelled.mcap --out review.html --corrections-template corr.yaml
    perception autolabel clip.mp4 --teacher models/demo.onnx --out clip.labelled.mcap --corrections corr.yaml

The output is an ordinary drive (JPEG frames + ground truth, docs/drive_format.md) that `perception train`
reads; each box carries `auto` = teacher id, teacher score, track score and origin. In Python:
`pipeline.label_recording(path, teacher_onnx, out, LabelOptions())`; `clean` is the temporal cleaning,
`corrections` the correction file, `review` the HTML contact sheet, `evaluate` the before / after figures.
"""
