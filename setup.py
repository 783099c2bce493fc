"""expert_hub: scalable transfer learning with expert models, as Keras / TF Hub modules."""

import setuptools

# The pins that work together (../shared/docs/stack.md): scann 1.4.2 does not import beside TF 2.21, and an
# unpinned tf-keras would pull TF 2.21.
INSTALL_REQUIRES = [
    "tensorflow==2.20.0",
    "tf-keras==2.20.1",
    "keras==3.15.1",
    "tensorflow-hub==0.16.1",
    "tensorflow-datasets==4.9.10",
    "scann==1.4.2; platform_system == 'Linux'",
    "absl-py==2.5.1",
    "kagglehub==1.0.3",  # published experts from Kaggle Models (expert_hub/hub/published.py)
    "importlib_resources",  # tensorflow-datasets 4.9.10 imports it without declaring it
    "matplotlib",
    "numpy",
    "scikit-learn==1.9.1",  # the linear probe (LogisticRegression) and its folds (StratifiedKFold)
    "scipy==1.17.1",  # intervals (t quantiles) and rank correlations (kendalltau, spearmanr)
    "threadpoolctl==3.8.0",  # a scikit-learn dependency; holds the probes at one BLAS thread (proxies.fit_probe)
]

BINARIES = {
    "expert-hub-train-upstream": "binaries.train_upstream:run",
    "expert-hub-train-experts": "binaries.train_experts:run",
    "expert-hub-export-experts": "export.export_experts:run",
    "expert-hub-select-expert": "binaries.select_expert:run",
    "expert-hub-evaluate-proxies": "binaries.evaluate_proxies:run",
    "expert-hub-finetune": "binaries.finetune:run",
    "expert-hub-run-pipeline": "binaries.run_pipeline:run",
    "expert-hub-import-bit": "binaries.import_bit:run",
    "expert-hub-benchmark-packing": "binaries.benchmark_packing:run",
    "expert-hub-benchmark-selection": "binaries.benchmark_selection:run",
    "expert-hub-benchmark-scale": "binaries.benchmark_scale:run",
    "expert-hub-benchmark-beam": "binaries.benchmark_beam:run",
    "expert-hub-benchmark-expert-stream": "binaries.benchmark_expert_stream:run",
    "expert-hub-benchmark-inference": "binaries.benchmark_inference:run",
    "expert-hub-benchmark-input-teardown": "binaries.benchmark_input_teardown:run",
    "expert-hub-benchmark-knn": "binaries.benchmark_knn:run",
    "expert-hub-benchmark-probe": "binaries.benchmark_probe:run",
    "expert-hub-benchmark-transfer-cost": "binaries.benchmark_transfer_cost:run",
    "expert-hub-run-vtab": "binaries.run_vtab:run",
}

setuptools.setup(
    name="expert_hub",
    version="0.1.0",
    description="Scalable transfer learning with expert models: train, export, select and fine-tune experts.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["expert_hub", "expert_hub.*", "binaries", "export"]),
    package_data={"expert_hub.data.world": ["hierarchy.json"], "expert_hub.hub": ["bit_in21k.json"]},
    install_requires=INSTALL_REQUIRES,
    # beam: selection over many experts x tasks on Apache Beam (selection/beam_selection.py); apache-beam 2.77
    # installs beside TensorFlow 2.20 and brings protobuf 6 and Pillow 12 (the whole suite passes with them).
    extras_require={"test": ["pytest"], "beam": ["apache-beam==2.77.0"]},
    entry_points={"console_scripts": [f"{k}={v}" for k, v in BINARIES.items()]},
)
