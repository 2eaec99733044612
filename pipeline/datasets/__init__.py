"""Datasets: download and verify archives, extract them safely, and convert each
dataset (or generate the embedded one) into the canonical layout
``data/<name>/{train,val}/{images,labels}/`` + ``classes.csv`` (see ``prepare``)."""
