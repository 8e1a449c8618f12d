"""``mlcicd init``: onboard a data file as a new pipeline.

``profile`` reads what each column is; ``suite`` turns the profile into a reviewable
Great Expectations suite; ``sizing`` sizes the model gates by a power calculation at
the data's size; ``scaffold`` splits the golden set and writes ``assets/<name>/``
atomically (a temporary folder renamed into place).
"""
