//! The paper's App. C / Fig. 7 in miniature, with no network: optimising θ alone so that the
//! warped reference disc matches two merged circles. A thin-plate spline (circular 20 control
//! points) fits the waist; the best affine map can only give an ellipse. Exercises the gradient of
//! grid_sample with respect to the grid end to end.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use segdiff_mhvae::loss::soft_dice_loss;
use segdiff_mhvae::reference_mask::reference_disc_tensor;
use segdiff_mhvae::warp::{affine_grid, grid_sample, lattice_coords, ControlPoints, TpsWarp};

const SIZE: usize = 64;

/// Two overlapping discs (normalised centres (±0.3, 0.05), radius 0.3): a peanut with a waist.
fn merged_circles() -> Tensor {
    let xs = lattice_coords(SIZE, false);
    let mut v = Vec::with_capacity(SIZE * SIZE);
    for &y in &xs {
        for &x in &xs {
            let inside = |cx: f64| (x - cx).powi(2) + (y - 0.05f64).powi(2) <= 0.3f64.powi(2);
            v.push(if inside(-0.3) || inside(0.3) {
                1f32
            } else {
                0f32
            });
        }
    }
    Tensor::from_vec(v, (1, 1, SIZE, SIZE), &Device::Cpu).unwrap()
}

fn hard_dice(pred: &Tensor, target: &Tensor) -> f64 {
    let p = pred.ge(0.5).unwrap().to_dtype(DType::F32).unwrap();
    let inter = (&p * target)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let total = (p.sum_all().unwrap() + target.sum_all().unwrap())
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    2.0 * inter / total
}

/// Adam on soft Dice for `steps` steps; returns the final hard Dice of the warped binary disc.
fn fit(theta: &Var, warp: impl Fn(&Tensor) -> Tensor, steps: usize) -> f64 {
    let soft_r = reference_disc_tensor(SIZE, SIZE, true, &Device::Cpu).unwrap();
    let hard_r = reference_disc_tensor(SIZE, SIZE, false, &Device::Cpu).unwrap();
    let target = merged_circles();
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(vec![theta.clone()], params).unwrap();
    for _ in 0..steps {
        let warped = grid_sample(&soft_r, &warp(theta.as_tensor()), false).unwrap();
        let loss = soft_dice_loss(&warped, &target, 1.0).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let warped = grid_sample(&hard_r, &warp(theta.as_tensor()), false).unwrap();
    hard_dice(&warped, &target)
}

#[test]
fn tps_fits_two_merged_circles_and_affine_cannot() {
    let dev = Device::Cpu;
    let layout = ControlPoints::Circular { count: 20 };
    let tps = TpsWarp::new(&layout.targets(), SIZE, SIZE, false, &dev).unwrap();
    let identity_sources = tps.identity_sources(&dev).unwrap();
    // θ is the offset of the source points from the targets (θ = 0: identity).
    let theta_tps = Var::zeros((1, layout.len(), 2), DType::F32, &dev).unwrap();
    let tps_dice = fit(
        &theta_tps,
        |t| tps.grid(&(t + &identity_sources).unwrap()).unwrap(),
        300,
    );

    let identity = Tensor::new(&[[[1f32, 0., 0.], [0., 1., 0.]]], &dev).unwrap();
    let theta_aff = Var::zeros((1, 2, 3), DType::F32, &dev).unwrap();
    let aff_dice = fit(
        &theta_aff,
        |t| affine_grid(&(t + &identity).unwrap(), SIZE, SIZE, false).unwrap(),
        300,
    );
    let start = hard_dice(
        &reference_disc_tensor(SIZE, SIZE, false, &dev).unwrap(),
        &merged_circles(),
    );
    println!("Dice: start {start:.3}, affine {aff_dice:.3}, TPS {tps_dice:.3}");
    assert!(tps_dice >= 0.95, "TPS Dice {tps_dice:.3}");
    assert!(
        tps_dice >= aff_dice + 0.05,
        "TPS {tps_dice:.3} vs affine {aff_dice:.3}"
    );
}
