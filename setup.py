from setuptools import setup, find_packages

# Console scripts: command name -> module:function of its main(argv). Kept in one table so that
# documentation/cli.md can be checked against it by a test. Every command runs through the one
# wrapper diffoseg_auto.cli.console (user errors -> one line + exit 1, -v/-q), which finds the
# real main in the entry-point group diffoseg_auto.commands.
CONSOLE_SCRIPTS = {
    # foundation
    "diffoseg_convert_lidc": "dataset_conversion.convert_lidc:main",
    "diffoseg_convert_npc170": "dataset_conversion.convert_npc170:main",
    "diffoseg_convert_bubil": "dataset_conversion.convert_bubil:main",
    "diffoseg_convert_qubiq": "dataset_conversion.convert_qubiq:main",
    "diffoseg_convert_folder": "dataset_conversion.convert_folder:main",
    "diffoseg_generate_toy_dataset": "dataset_conversion.generate_toy_dataset:main",
    "diffoseg_verify_dataset": "diffoseg_auto.dataset.integrity:main",
    # planning
    "diffoseg_plan_and_preprocess": "planners.plan_and_preprocess_entrypoints:plan_and_preprocess",
    "diffoseg_extract_fingerprint": "planners.plan_and_preprocess_entrypoints:extract_fingerprint",
    "diffoseg_plan_experiment": "planners.plan_and_preprocess_entrypoints:plan_experiment",
    "diffoseg_preprocess": "planners.plan_and_preprocess_entrypoints:preprocess",
    "diffoseg_add_reference_configuration": "planners.reference_configuration:main",
    # training, prediction, evaluation
    "diffoseg_train": "diffoseg_auto.training.run_training:main",
    "diffoseg_add_rater": "diffoseg_auto.training.add_rater:main",
    "diffoseg_predict": "diffoseg_auto.inference.predict_entrypoint:main",
    "diffoseg_evaluate": "diffoseg_auto.evaluation.evaluate_entrypoint:main",
    "diffoseg_benchmark": "diffoseg_auto.evaluation.benchmark_entrypoint:main",
    # the end of the workflow: best configuration, ensembles, shareable models, case triage
    "diffoseg_find_best_configuration": "diffoseg_auto.evaluation.find_best_configuration:main",
    "diffoseg_ensemble": "diffoseg_auto.inference.ensemble:main",
    "diffoseg_export_model_to_zip": "diffoseg_auto.inference.model_export:export_main",
    "diffoseg_install_pretrained_model_from_zip": "diffoseg_auto.inference.model_install:install_main",
    "diffoseg_rank_cases": "diffoseg_auto.evaluation.rank_cases_entrypoint:main",
}

setup(
    name="diffoseg_auto",
    version="0.1.0",
    description="Self-configuring two-stage categorical diffusion (DiffOSeg) for multi-rater segmentation",
    packages=find_packages(include=["diffoseg_auto*", "planners*", "dataset_conversion*"]),
    package_data={"planners": ["sampling_evidence.json"]},  # the curves the planned S and samples per rater follow
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "batchgenerators>=0.25",
        "SimpleITK>=2.2",
        "numpy",
        "scipy",
        "acvl-utils>=0.2.1",  # crop_and_pad_nd
        "dynamic-network-architectures>=0.3",
        "pandas",
        "matplotlib",
        "tqdm",
        "h5py",
        "scikit-image",
    ],
    extras_require={"test": ["pytest", "pytest-timeout", "packaging"]},  # packaging: benchmarks/gpu/check_imports.py
    entry_points={"console_scripts": [f"{k}=diffoseg_auto.cli.console:{k}" for k in CONSOLE_SCRIPTS],
                  "diffoseg_auto.commands": [f"{k}={v}" for k, v in CONSOLE_SCRIPTS.items()]},
)
